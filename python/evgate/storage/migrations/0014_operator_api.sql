-- The operator API of issue 21.

-- Reservations that evgate numbers (POST /api/v1/reservations): the row is made with its id
-- before ReserveNow is sent ('Requested'), so the id is the sequence's and no other; the
-- charger's refusal ('Refused', its ReserveNow status in refusal) and a command that failed
-- ('Failed', why in error) are kept, as the API shows them.
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check CHECK (status IN
    ('Requested', 'Reserved', 'Used', 'Cancelled', 'Expired', 'Refused', 'Failed'));
ALTER TABLE reservations ADD COLUMN refusal text, ADD COLUMN error text;
-- Ids the operator chose through the command API before: the sequence starts past them.
SELECT setval('reservation_ids', m) FROM (SELECT max(id) AS m FROM reservations) AS taken,
    reservation_ids WHERE m > last_value;

-- A transaction the operator closed (POST /api/v1/transactions/{id}/stop: the charger lost its
-- StopTransaction): the operator's reason; NULL for one the charger closed. Its stop_reason is
-- OCPP's 'Other'.
ALTER TABLE transactions ADD COLUMN operator_stop_reason text;
