-- Sessions and meter data (issue 5): what chargers tell evgate about themselves, their
-- connectors, id-tags, transactions, reservations, meter values and their per-minute rollups.
--
-- Tables written by the group-commit writer carry no foreign keys and no CHECKs that a valid
-- OCPP message could fail: one bad row would fail the whole batch it shares with other
-- chargers' rows (the writer then isolates it, but it costs a retry per submission). The
-- handlers validate what the schema does not, before they submit.

-- What a charger said in its last BootNotification. One row per charger, upserted.
CREATE TABLE charger_boot_info (
    charger_id                 text PRIMARY KEY,
    vendor                     text NOT NULL,
    model                      text NOT NULL,
    charge_point_serial_number text,
    charge_box_serial_number   text,
    firmware_version           text,
    iccid                      text,
    imsi                       text,
    meter_type                 text,
    meter_serial_number        text,
    -- The registration status evgate answered with.
    registration_status        text NOT NULL,
    booted_at                  timestamptz NOT NULL
);

-- The latest StatusNotification of each connector (connector 0 is the charger itself).
-- status_at is the charger's timestamp (or the time evgate received it, when absent): an older
-- notification arriving late never overwrites a newer one.
CREATE TABLE connectors (
    charger_id        text NOT NULL,
    connector_id      integer NOT NULL,
    status            text NOT NULL,
    error_code        text NOT NULL,
    info              text,
    vendor_id         text,
    vendor_error_code text,
    status_at         timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (charger_id, connector_id)
);

-- The operator's id-tag list (the native authorizer's source). An id-tag is never created by
-- being seen. OCPP id-tags are case-insensitive (CiString20): one row per upper(id_tag).
-- Every change sends NOTIFY evgate_id_tag, '<id_tag>' in its transaction.
CREATE TABLE id_tags (
    id_tag        text PRIMARY KEY CHECK (length(id_tag) BETWEEN 1 AND 20),
    status        text NOT NULL DEFAULT 'Accepted'
                  CHECK (status IN ('Accepted', 'Blocked', 'Expired', 'Invalid')),
    expiry_date   timestamptz,
    parent_id_tag text CHECK (length(parent_id_tag) BETWEEN 1 AND 20),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX id_tags_upper ON id_tags (upper(id_tag));

-- Transaction ids are unique across the system (every process and node draws from this
-- sequence) and fit OCPP's integer, which chargers commonly hold in 32 bits.
CREATE SEQUENCE transaction_ids AS integer START 1;

CREATE TABLE transactions (
    id              integer PRIMARY KEY DEFAULT nextval('transaction_ids'),
    charger_id      text NOT NULL,
    connector_id    integer NOT NULL,
    id_tag          text NOT NULL,
    -- The idTagInfo evgate answered StartTransaction with; a retried StartTransaction gets it
    -- again, with the same transaction id.
    id_tag_status   text NOT NULL,
    id_tag_expiry   timestamptz,
    parent_id_tag   text,
    -- An external authorizer's id for the session (Decision.external_session_id).
    external_session_id text,
    reservation_id  integer,
    meter_start     bigint NOT NULL,
    started_at      timestamptz NOT NULL,
    stopped_at      timestamptz,
    meter_stop      bigint,
    -- The stop reason exactly as sent (NULL when the charger sent none).
    stop_reason     text,
    stop_id_tag     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- The dedupe key of a StartTransaction: a resent one matches its first attempt.
CREATE UNIQUE INDEX transactions_start_key
    ON transactions (charger_id, connector_id, started_at, id_tag, meter_start);
CREATE INDEX transactions_charger ON transactions (charger_id, id);
CREATE INDEX transactions_id_tag ON transactions (upper(id_tag), id);
CREATE INDEX transactions_started ON transactions (started_at);
CREATE INDEX transactions_active ON transactions (upper(id_tag)) WHERE stopped_at IS NULL;

-- Reservations made through evgate (ReserveNow). A StartTransaction carrying the id ends it.
CREATE SEQUENCE reservation_ids AS integer START 1;

CREATE TABLE reservations (
    id             integer PRIMARY KEY DEFAULT nextval('reservation_ids'),
    charger_id     text NOT NULL,
    connector_id   integer NOT NULL,
    id_tag         text NOT NULL,
    parent_id_tag  text,
    expiry_date    timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'Reserved'
                   CHECK (status IN ('Reserved', 'Used', 'Cancelled', 'Expired')),
    transaction_id integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz
);
CREATE INDEX reservations_charger ON reservations (charger_id, id);

-- One row per sampled value, TimescaleDB-style on plain PostgreSQL: range-partitioned by day
-- (meter_values_pYYYYMMDD, made ahead by the maintenance task, dropped after the retention
-- period); a default partition takes rows no daily partition covers (a charger with a wrong
-- clock never gets an error; maintenance moves such rows into a daily partition when it
-- creates one). Units are normalised (kWh→Wh, kW→W, kvarh→varh, kvar→var, kVA→VA); value is
-- NULL when the sample is not a finite number, and raw_value keeps the text as sent for those
-- and for signed meter values (format SignedData).
CREATE TABLE meter_values (
    charger_id     text NOT NULL,
    connector_id   integer NOT NULL,
    transaction_id integer,
    ts             timestamptz NOT NULL,
    measurand      text NOT NULL,
    phase          text,
    location       text NOT NULL,
    context        text NOT NULL,
    format         text NOT NULL,
    unit           text,
    value          float8,
    raw_value      text
) PARTITION BY RANGE (ts);
CREATE TABLE meter_values_default PARTITION OF meter_values DEFAULT;
-- The dedupe key of a sampled value, leading with (charger, time): it is also the per-partition
-- btree that charger/time-range queries use.
CREATE UNIQUE INDEX meter_values_key
    ON meter_values (charger_id, ts, connector_id, measurand, phase, location) NULLS NOT DISTINCT;
CREATE INDEX meter_values_ts_brin ON meter_values USING brin (ts);

-- The series of meter values (charger, connector, measurand, phase, location: a total and its
-- per-phase values are different series), each numbered once, on first sight, by the writer.
-- The writer keeps the numbers it has seen committed in memory: a series is never renumbered
-- or deleted.
CREATE TABLE meter_series (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id   text NOT NULL,
    connector_id integer NOT NULL,
    measurand    text NOT NULL,
    phase        text,
    location     text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (charger_id, connector_id, measurand, phase, location)
);

-- Per-minute rollups of the numeric meter values, one row per series and minute: computed for
-- each batch by the native module and merged by the writer in the batch's transaction (always
-- current). Keyed by the series number, not its five text columns: the merge's conflict check
-- and update are then an (int4, timestamptz) btree probe and, with the page space that
-- fillfactor keeps free, a HOT update that touches no index.
CREATE TABLE meter_rollup_1m (
    series_id    integer NOT NULL,
    minute       timestamptz NOT NULL,
    min_value    float8 NOT NULL,
    max_value    float8 NOT NULL,
    sum_value    float8 NOT NULL,
    count        bigint NOT NULL,
    first_at     timestamptz NOT NULL,
    first_value  float8 NOT NULL,
    last_at      timestamptz NOT NULL,
    last_value   float8 NOT NULL,
    PRIMARY KEY (series_id, minute)
) WITH (fillfactor = 70);

-- DataTransfer requests from chargers, with the status evgate answered.
CREATE TABLE data_transfers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id  text NOT NULL,
    vendor_id   text NOT NULL,
    message_id  text,
    data        text,
    status      text NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX data_transfers_charger ON data_transfers (charger_id, id);

-- Diagnostics, firmware, log and signed-firmware status notifications, security events and
-- certificate signing requests: one row each, kind = the OCPP action.
CREATE TABLE charger_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id  text NOT NULL,
    kind        text NOT NULL,
    status      text,
    request_id  integer,
    event_type  text,
    tech_info   text,
    -- The charger's timestamp, when the message has one (SecurityEventNotification).
    sent_at     timestamptz,
    received_at timestamptz NOT NULL
);
CREATE INDEX charger_messages_charger ON charger_messages (charger_id, id);
-- A resent SecurityEventNotification (same type and timestamp) is stored once.
CREATE UNIQUE INDEX charger_messages_security_event
    ON charger_messages (charger_id, event_type, sent_at)
    WHERE kind = 'SecurityEventNotification';

-- One row per committed writer batch, written in the batch's transaction: after a connection
-- lost during COMMIT, the writer looks its batch up here to know whether it committed, so a
-- batch is never written twice. Pruned by the maintenance task.
CREATE TABLE writer_commits (
    batch_id     uuid PRIMARY KEY,
    committed_at timestamptz NOT NULL DEFAULT now()
);
