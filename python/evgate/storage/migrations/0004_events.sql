-- Notifications (issue 6): the transactional outbox, subscriptions, deliveries and CDRs.
-- See docs/ARCHITECTURE.md "Notifications" and python/evgate/events/dispatcher.py.

-- The catalog's chargePointId is an integer; a charger's id is its OCPP identity (text). Every
-- charger gets a stable integer surrogate, never reused, that notifications carry.
ALTER TABLE chargers ADD COLUMN number bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
-- idTag.changed's idTagsId: the same kind of surrogate for an id tag (keyed by its text).
ALTER TABLE id_tags ADD COLUMN number bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
-- What NetworkStatusNotification last said, for ChargePointChangedNotification's networkStatus.
ALTER TABLE chargers ADD COLUMN network_status text NOT NULL DEFAULT 'never connected'
    CHECK (network_status IN ('never connected', 'available', 'temporarily unavailable',
                              'long-term unavailable'));

-- One row per event, written in the same transaction as the state it describes. ``xid`` is the
-- writing transaction: the dispatcher reads only rows whose transaction is older than every
-- running one (pg_snapshot_xmin), so a row that commits late is never skipped by a cursor.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- The charger the event is about ('' for events about no charger): the ordering key.
    charger_id  text NOT NULL DEFAULT '',
    event       text NOT NULL,
    -- The exact JSON body sent to receivers (bytea: kept byte for byte, no re-encoding).
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_xid ON outbox (xid, id);
CREATE INDEX outbox_created_at ON outbox USING brin (created_at);

-- The fan-out cursor: every outbox row up to (after_xid, after_id), in (xid, id) order, has
-- been fanned out into deliveries. One process at a time advances it (FOR UPDATE SKIP LOCKED).
CREATE TABLE outbox_cursor (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    after_xid   xid8 NOT NULL DEFAULT '0',
    after_id    bigint NOT NULL DEFAULT 0
);
INSERT INTO outbox_cursor DEFAULT VALUES;

CREATE TABLE subscriptions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    via             text NOT NULL CHECK (via IN ('webhook', 'kafka')),
    notifications   text[] NOT NULL,
    callback_url    text,
    -- Kafka settings without the password (topic, brokers, compressionCodec, ...).
    kafka           jsonb,
    -- The SASL password must be presented to the brokers, so it cannot be a digest; it is
    -- never returned by the API.
    kafka_password  text,
    -- Standard Webhooks signing key (32 random bytes; shown once, as whsec_<base64>). A key
    -- that signs must exist where the signing happens; it grants nothing but that.
    webhook_secret  bytea NOT NULL,
    -- X-Signature key: the HMAC-SHA256 key schedule of the creating API token (the SHA-256
    -- states after the ipad and opad blocks, 64 bytes), never the token itself. It signs
    -- exactly as HMAC(token, body) does, and cannot be turned back into the token.
    token_hmac_state bytea,
    created_by      bigint,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((via = 'webhook') = (callback_url IS NOT NULL)),
    CHECK ((via = 'kafka') = (kafka IS NOT NULL))
);

-- One row per (subscription, event) not yet delivered: 'pending' waits in its lane, 'failed'
-- gave up (retries exhausted, or the subscription was disabled) and can be resent. A delivery
-- that succeeds is deleted; delivery_attempts keeps the history of failed attempts.
CREATE TABLE deliveries (
    subscription_id bigint NOT NULL REFERENCES subscriptions ON DELETE CASCADE,
    outbox_id       bigint NOT NULL,
    charger_id      text NOT NULL,
    event           text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, outbox_id)
);
CREATE INDEX deliveries_lane ON deliveries (subscription_id, charger_id, outbox_id)
    WHERE state = 'pending';
CREATE INDEX deliveries_outbox ON deliveries (outbox_id);
CREATE INDEX deliveries_failed ON deliveries (subscription_id, created_at)
    WHERE state = 'failed';

-- A lane is one subscription's queue for one charger: its deliveries go one at a time, in
-- outbox order. A process claims a lane with FOR UPDATE SKIP LOCKED and holds a lease on it
-- while it delivers; ``version`` grows with every delivery added, so a lane is removed only
-- when nothing was added since its claimant looked.
CREATE TABLE delivery_lanes (
    subscription_id bigint NOT NULL REFERENCES subscriptions ON DELETE CASCADE,
    charger_id      text NOT NULL,
    version         bigint NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    PRIMARY KEY (subscription_id, charger_id)
);
CREATE INDEX delivery_lanes_due ON delivery_lanes (subscription_id, next_attempt_at);

CREATE TABLE delivery_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint NOT NULL REFERENCES subscriptions ON DELETE CASCADE,
    outbox_id       bigint NOT NULL,
    attempt         integer NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    ok              boolean NOT NULL,
    status_code     integer,
    error           text,
    duration_ms     double precision
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (subscription_id, outbox_id);
CREATE INDEX delivery_attempts_at ON delivery_attempts USING brin (at);

-- Charge detail records, made when a transaction ends (readable at /api/v1/cdrs/{id}).
CREATE TABLE cdrs (
    id              text PRIMARY KEY,
    charger_id      text NOT NULL,
    charger_number  bigint NOT NULL,
    transaction_id  bigint NOT NULL,
    connector_id    integer NOT NULL,
    id_tag          text,
    started_at      timestamptz NOT NULL,
    stopped_at      timestamptz NOT NULL,
    meter_start_wh  bigint NOT NULL,
    meter_stop_wh   bigint NOT NULL,
    energy_wh       bigint NOT NULL,
    stop_reason     text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cdrs_charger ON cdrs (charger_id, stopped_at);
