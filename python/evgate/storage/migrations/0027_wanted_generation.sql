-- The writer knows which events are wanted without reading the subscriptions in each batch
-- (issue 23): it keeps the names every enabled subscription lists in memory, with the
-- *generation* of the subscriptions they were read at, and filters a batch's outbox rows in
-- Python, so an event nobody subscribed to costs neither its literal nor its parse. A batch
-- that left an event out checks, in the statements sent with its COMMIT, that the generation
-- is still the one it filtered by: it takes the shared advisory lock of migration 0026 (held
-- to the end of its transaction), then writes its `writer_commits` row in a statement of its
-- own, whose snapshot is taken after the lock under READ COMMITTED (which the writer's BEGIN
-- names): the row's id is NULL, which the column refuses, if the generation moved; the writer
-- then reads the names again and runs the batch again (storage/writer.py).
--
-- Every change to what the subscriptions want moves the generation (the trigger below, which
-- replaces 0026's). One that can make an event wanted (a subscription made enabled, enabled
-- again, naming more events) then takes that lock exclusively: it waits for the batches that
-- checked the old generation (they filtered by the names before it, and commit before it
-- exists) and holds the next ones back until it commits, when they see the new generation.
-- So no event is skipped that a subscription is owed (one committed after it). The row comes
-- first, the lock second: a widening that waits for the row (held by another change still
-- open) must not hold the lock meanwhile, or every batch would wait for that other change.
-- One that only narrows (disabled, deleted, naming fewer events) takes no lock: a batch that
-- filtered by the wider names writes rows nobody reads (the fan-out skips them); the writer
-- reads the names again at least every second (a batch that keeps all its rows checks
-- nothing); so deleting a sub-operator (its subscriptions go by cascade) never waits for the
-- writer. The generation is a row, not a sequence: a sequence's next value is seen before its
-- transaction commits.
CREATE TABLE outbox_wanted (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    generation bigint NOT NULL
);
INSERT INTO outbox_wanted (generation) VALUES (0);

CREATE FUNCTION subscriptions_wanted_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbox_wanted SET generation = generation + 1;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.enabled
                            AND (NOT OLD.enabled OR NOT NEW.notifications <@ OLD.notifications))
    THEN
        PERFORM pg_advisory_xact_lock(1702258548, 26);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER subscriptions_wanted_insert ON subscriptions;
DROP TRIGGER subscriptions_wanted_update ON subscriptions;
DROP FUNCTION subscriptions_wait_for_event_writers();
CREATE TRIGGER subscriptions_wanted_insert BEFORE INSERT ON subscriptions
    FOR EACH ROW WHEN (NEW.enabled)
    EXECUTE FUNCTION subscriptions_wanted_changed();
CREATE TRIGGER subscriptions_wanted_update BEFORE UPDATE ON subscriptions
    FOR EACH ROW
    WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled
          OR (NEW.enabled AND OLD.notifications IS DISTINCT FROM NEW.notifications))
    EXECUTE FUNCTION subscriptions_wanted_changed();
CREATE TRIGGER subscriptions_wanted_delete BEFORE DELETE ON subscriptions
    FOR EACH ROW WHEN (OLD.enabled)
    EXECUTE FUNCTION subscriptions_wanted_changed();
CREATE TRIGGER subscriptions_wanted_truncate BEFORE TRUNCATE ON subscriptions
    FOR EACH STATEMENT
    EXECUTE FUNCTION subscriptions_wanted_changed();

-- Row-level security as every table (migration 0020), with no policy: a tenant's request never
-- reads or moves the generation itself; the trigger does, as the owner, whoever's change of a
-- subscription fires it (a tenant's too), with this migration's search path.
ALTER TABLE outbox_wanted ENABLE ROW LEVEL SECURITY;
ALTER FUNCTION subscriptions_wanted_changed() SECURITY DEFINER SET search_path FROM CURRENT;
