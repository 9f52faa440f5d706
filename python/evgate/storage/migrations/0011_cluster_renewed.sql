-- A crashed process's chargers go down with its lease (issue 14.7): when an expired instance
-- is reaped, the chargers it still owned are set 'temporarily unavailable' as of the last
-- moment they were known connected: the instance's last renewal (or their connect, if later).
ALTER TABLE cluster_instances ADD COLUMN renewed_at timestamptz NOT NULL DEFAULT now();
