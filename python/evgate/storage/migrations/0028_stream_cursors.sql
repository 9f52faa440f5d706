-- Webhook delivery by cursor (issue 17): the operator's webhook subscriptions are streamed from
-- the outbox as its Kafka ones are (migration 0025), so the cursors are no longer Kafka's: the
-- table, its key and its reference are renamed for what they are. Rows, the lease and the
-- tenant's read policy (which follows the table) are unchanged. See docs/ARCHITECTURE.md
-- "Notifications" and python/evgate/storage/stream_cursors.py.
ALTER TABLE kafka_cursors RENAME TO stream_cursors;
ALTER TABLE stream_cursors RENAME CONSTRAINT kafka_cursors_pkey TO stream_cursors_pkey;
ALTER TABLE stream_cursors
    RENAME CONSTRAINT kafka_cursors_subscription_id_fkey TO stream_cursors_subscription_id_fkey;
