-- Per-minute rollups become partial aggregates (issue 5's writer throughput): the writer
-- appends each batch's rollups (one row per series and minute of the batch, computed by the
-- native module) with COPY in the batch's transaction, instead of upserting them into one row
-- per series and minute. A series and minute may then have several rows; readers combine them
-- (min of the mins, sum of the sums and counts, first by first_at, last by last_at), and the
-- maintenance task folds the rows of each settled minute into one (storage/maintenance.py).
--
-- Why: a charger sends one MeterValues at a time, so a batch holds at most one message of a
-- charger and nearly every rollup the writer merged was an index probe plus an update of its
-- own, which cost PostgreSQL as much as storing the meter row itself. An append costs a heap
-- row and an index entry, and takes no row lock, so two writers never wait on each other here.
ALTER TABLE meter_rollup_1m DROP CONSTRAINT meter_rollup_1m_pkey;
CREATE INDEX meter_rollup_1m_series ON meter_rollup_1m (series_id, minute);
-- Rows arrive roughly in time order: the folding finds recent minutes through this.
CREATE INDEX meter_rollup_1m_minute_brin ON meter_rollup_1m USING brin (minute);
-- Rows are no longer updated in place: no free space to keep for HOT updates.
ALTER TABLE meter_rollup_1m SET (fillfactor = 100);

-- How far the maintenance task has folded: every minute before `folded_until` was folded once
-- (later partials of such a minute, from a charger uploading late, are folded only if they
-- arrive within a few minutes; readers combine the others). One row, shared by all processes.
CREATE TABLE meter_rollup_folds (
    only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    folded_until  timestamptz NOT NULL
);
