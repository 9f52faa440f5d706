-- The writer appends an event to the outbox only if an enabled subscription names it
-- (storage/ops/outbox.py, issue 23): an event nobody subscribed to was written, its indexes
-- updated, read by the fan-out and deleted by the prune, for nothing (~40 % of evgate's WAL
-- at a fleet's pace).
--
-- Nothing a subscription is owed may be skipped. A subscription is owed the events committed
-- after it: the writer's INSERT reads the subscriptions in its own statement, but a
-- subscription committed after that statement's snapshot and before the INSERT's own commit
-- would miss the event. So the writer's INSERT is preceded, in the same round trip, by a
-- shared advisory lock held to the end of its transaction (the key below), and a change that
-- can make an event wanted (a subscription made enabled, enabled again, or naming more
-- events) first takes that lock exclusively: it waits for the writer transactions that are
-- past that point (their INSERT and COMMIT, already sent) and holds the next ones back until
-- it commits. The INSERT is a statement of its own after the lock, so under READ COMMITTED
-- (which the writer's BEGIN names) its snapshot is taken after the wait and sees the
-- subscription. Only the writer's filtered INSERT takes the lock: the prune, vacuum, the API's
-- own events (not filtered) never make a subscription wait, nor wait for one.
--
-- The key (1702258548 = 'evgt', 26 = this migration) is also in storage/ops/outbox.py.
CREATE FUNCTION subscriptions_wait_for_event_writers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1702258548, 26);
    RETURN NEW;
END
$$;
CREATE TRIGGER subscriptions_wanted_insert BEFORE INSERT ON subscriptions
    FOR EACH ROW WHEN (NEW.enabled)
    EXECUTE FUNCTION subscriptions_wait_for_event_writers();
CREATE TRIGGER subscriptions_wanted_update BEFORE UPDATE ON subscriptions
    FOR EACH ROW
    WHEN (NEW.enabled AND (NOT OLD.enabled OR NOT NEW.notifications <@ OLD.notifications))
    EXECUTE FUNCTION subscriptions_wait_for_event_writers();
