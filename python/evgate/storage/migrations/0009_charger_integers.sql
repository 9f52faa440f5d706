-- Every integer a charger sends is stored as sent or refused before it reaches the database
-- (issue 15): a LogStatusNotification or SignedFirmwareStatusNotification requestId is any
-- JSON integer to the schemas, and one above 2^31-1 failed this integer column, answered
-- InternalError at every resend. evgate's own request ids (command_request_ids) are bigint
-- already; the handlers refuse a requestId beyond bigint with PropertyConstraintViolation.
-- The table is small (one row per notification), so the rewrite is short.
ALTER TABLE charger_messages ALTER COLUMN request_id TYPE bigint;
