-- The writer appends an event to the outbox only if an enabled subscription names it
-- (storage/ops/outbox.py, issue 23): an event nobody subscribed to was written, its indexes
-- updated, read by the fan-out and deleted by the prune, for nothing (~40 % of evgate's WAL
-- at a fleet's pace).
--
-- Nothing a subscription is owed may be skipped. A subscription is owed the events committed
-- after it: the writer's INSERT reads the subscriptions in the same statement, but a
-- subscription committed a moment after that statement's snapshot, and before the INSERT's
-- own commit, would miss the event. So a change that can make an event wanted (a subscription
-- made enabled, enabled again, or naming more events) first takes the outbox in SHARE mode,
-- which waits for every transaction that has written to the outbox (an INSERT holds ROW
-- EXCLUSIVE until it ends, whether or not it inserted a row) and holds back the next ones
-- until the change commits. A writer's INSERT that waited takes its snapshot after the lock
-- (READ COMMITTED), so it sees the subscription. Subscriptions change rarely; the wait is a
-- writer batch at most.
--
-- SECURITY DEFINER: a tenant's token makes subscriptions, and LOCK needs more than it may do.
CREATE FUNCTION subscriptions_hold_outbox() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    LOCK TABLE outbox IN SHARE MODE;
    RETURN NEW;
END
$$;
CREATE TRIGGER subscriptions_hold_outbox_insert BEFORE INSERT ON subscriptions
    FOR EACH ROW WHEN (NEW.enabled)
    EXECUTE FUNCTION subscriptions_hold_outbox();
CREATE TRIGGER subscriptions_hold_outbox_update BEFORE UPDATE ON subscriptions
    FOR EACH ROW
    WHEN (NEW.enabled AND (NOT OLD.enabled OR NOT NEW.notifications <@ OLD.notifications))
    EXECUTE FUNCTION subscriptions_hold_outbox();
