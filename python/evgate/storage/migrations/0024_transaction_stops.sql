-- What a transaction's stop does besides closing it.
--
-- Its idle periods do not depend on how its writes were batched.
--
-- transactions_idle (0013) opens and closes idle periods only while the transaction is open.
-- But a stop runs after the other ops of its batch (WriteOp.reads_batch), so a
-- StatusNotification received after an operator's stop and committed in the same batch
-- reached the transaction while it was still open: a Finishing / SuspendedEV at or after the
-- stop opened a period there, an Available after it closed one. Committed in batches of their
-- own, the same messages would have changed nothing. So the stop itself takes back what those
-- statuses did, by the charger's timestamps: a period that starts at or after stopped_at is
-- dropped, and one that a status at or after stopped_at closed is open again (the price
-- clips it at stopped_at, as every open period). A BEFORE trigger, so the stop's RETURNING
-- (what the price is computed from) already sees the result.

CREATE FUNCTION transactions_idle_at_stop() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.idle_periods := COALESCE((
        SELECT jsonb_agg(
                   CASE WHEN (p ->> 1)::timestamptz >= NEW.stopped_at
                        THEN jsonb_build_array(p -> 0, NULL) ELSE p END
                   ORDER BY n)
        FROM jsonb_array_elements(NEW.idle_periods) WITH ORDINALITY AS e(p, n)
        WHERE (p ->> 0)::timestamptz < NEW.stopped_at), '[]');
    RETURN NEW;
END
$$;
CREATE TRIGGER transactions_idle_at_stop BEFORE UPDATE OF stopped_at ON transactions
    FOR EACH ROW
    WHEN (OLD.stopped_at IS NULL AND NEW.stopped_at IS NOT NULL
          AND NEW.idle_periods <> '[]'::jsonb)
    EXECUTE FUNCTION transactions_idle_at_stop();

-- An operator's stop reaches the process that holds the charger. The stop is made through
-- the API of any process, but the charger's connection, wherever it is, remembers its open
-- transactions (their MeterValues describe a running transaction; load management keeps its
-- share): each process LISTENs and forgets the transaction (HandlerServices.
-- transaction_closed). Sent in the stop's own transaction, so only a committed stop is told;
-- only the operator's (a charger's StopTransaction is handled where the charger is).
-- Payload: '<transaction id> <charger id>'.
CREATE FUNCTION transactions_operator_stop_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('evgate_transaction_stop', NEW.id || ' ' || NEW.charger_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER transactions_operator_stop AFTER UPDATE OF stopped_at ON transactions
    FOR EACH ROW
    WHEN (OLD.stopped_at IS NULL AND NEW.stopped_at IS NOT NULL
          AND NEW.operator_stop_reason IS NOT NULL)
    EXECUTE FUNCTION transactions_operator_stop_notify();
