-- Per-minute rollups become partial aggregates (issue 5's writer throughput): the writer
-- appends each batch's rollups (one row per series and minute of the batch, computed by the
-- native module) with COPY in the batch's transaction, instead of upserting them into one row
-- per series and minute. A series and minute may then have several rows; readers combine them
-- (min of the mins, sum of the sums and counts, first by first_at, last by last_at), and the
-- maintenance task folds the rows of each settled minute into one (storage/maintenance.py).
--
-- Every evgate process of a cluster must run a version with this migration: an older one's
-- upsert needs the unique key dropped here (stop them all, then start the new version).
--
-- Why: a charger sends one MeterValues at a time, so a batch holds at most one message of a
-- charger and nearly every rollup the writer merged was an index probe plus an update of its
-- own, which cost PostgreSQL as much as storing the meter row itself. An append costs a heap
-- row and an index entry, and takes no row lock, so two writers never wait on each other here.
ALTER TABLE meter_rollup_1m DROP CONSTRAINT meter_rollup_1m_pkey;
CREATE INDEX meter_rollup_1m_series ON meter_rollup_1m (series_id, minute);
-- Rows arrive roughly in time order: the fold finds recent minutes through this. minmax_multi,
-- so that a charger with a wrong clock (a minute in 2099) does not make its page range match
-- every query; autosummarize, so that autovacuum summarizes each page range once it is full
-- (an unsummarized range matches every query, and this table gets few VACUUMs of its own).
CREATE INDEX meter_rollup_1m_minute_brin ON meter_rollup_1m
    USING brin (minute timestamptz_minmax_multi_ops) WITH (autosummarize = on);
-- Rows are no longer updated in place: no free space to keep for HOT updates.
ALTER TABLE meter_rollup_1m SET (fillfactor = 100);

-- How far the maintenance task has folded, by the database's clock: the minutes before
-- `folded_until` have been looked at (a fold looks back at most an hour, so after a longer stop
-- of folding the minutes in between stay partial; so do partials that a charger sends more
-- than a few minutes late; readers combine them either way). One row, shared by all processes.
CREATE TABLE meter_rollup_folds (
    only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    folded_until  timestamptz NOT NULL
);
