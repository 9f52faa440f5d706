-- Kafka delivery by cursor (issue 17): a Kafka subscription reads the outbox itself, in (xid, id)
-- order below the horizon (pg_snapshot_xmin), from a cursor of its own: no `deliveries` row per
-- event. Only a record a broker refuses goes to the lanes (a `deliveries` row, as a webhook's).
-- See docs/ARCHITECTURE.md "Notifications" and python/evgate/storage/kafka_cursors.py.
--
-- The fan-out makes a row for each enabled Kafka subscription that has none, at its own
-- position (the events a new webhook subscription would get from then on), and removes the row
-- of a subscription that is no longer an enabled Kafka one (disabled, or made a webhook): its
-- next enabling starts at the fan-out's position again.
CREATE TABLE kafka_cursors (
    subscription_id bigint PRIMARY KEY REFERENCES subscriptions ON DELETE CASCADE,
    -- Every outbox row up to (after_xid, after_id) was produced and acknowledged, or is in a
    -- lane (a `deliveries` row), or was not wanted.
    after_xid       xid8 NOT NULL,
    after_id        bigint NOT NULL,
    -- The dispatcher streaming it (a token of its own) and until when: one at a time, renewed
    -- each batch; a dead process's lease runs out and another takes the stream over. A lease,
    -- not a row lock held over the produce: an open transaction holds back pg_snapshot_xmin
    -- and with it every fan-out.
    holder          text,
    leased_until    timestamptz
);

-- Row-level security as every table (migration 0020). A tenant may read the cursor of its own
-- subscription (its deliveries' counts include what the stream has still to send); only the
-- dispatcher, as the owner, writes it.
ALTER TABLE kafka_cursors ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format('CREATE POLICY tenant ON kafka_cursors FOR SELECT TO %I'
                   ' USING (subscription_id IN'
                   '   (SELECT id FROM subscriptions WHERE sub_operator_id = evgate_tenant()))',
                   evgate_tenant_role());
END
$$;
