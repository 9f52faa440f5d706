-- External authorization (issue 7): installations, a charger's membership, the offline-charging
-- configuration pushed to each charger, and the durable queue of session ends for providers.

CREATE TABLE installations (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    authorization_mode          text NOT NULL DEFAULT 'native'
                                CHECK (authorization_mode IN ('native', 'acceptAll', 'webhook')),
    -- The provider's settings as the operator gave them (camelCase JSON). Its credentials are
    -- stored as given, unlike evgate's own secrets (ARCHITECTURE rule 5): evgate must present
    -- them to the provider. The API never shows them (see auth/installations.py).
    webhook                     jsonb,
    allow_charging_when_offline boolean NOT NULL DEFAULT false,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CHECK (authorization_mode <> 'webhook' OR webhook IS NOT NULL)
);

-- A charger belongs to at most one installation. Deleting an installation that still has
-- chargers is refused (RESTRICT): silently moving them back to the native list would change
-- who may charge at them.
ALTER TABLE chargers
    ADD COLUMN installation_id bigint REFERENCES installations (id) ON DELETE RESTRICT;
CREATE INDEX chargers_installation_idx ON chargers (installation_id)
    WHERE installation_id IS NOT NULL;

-- What evgate last asked of a charger's offline-charging configuration and how the charger
-- answered, one row per charger. ``state``: pending (not pushed yet: the charger is offline
-- or the push is under way), applied (every key Accepted), reboot_required, rejected (a key
-- was Rejected or NotSupported), failed (the charger did not answer).
CREATE TABLE charger_offline_config (
    charger_id      text PRIMARY KEY REFERENCES chargers (id) ON DELETE CASCADE,
    allow_offline   boolean NOT NULL,
    state           text NOT NULL
                    CHECK (state IN ('pending', 'applied', 'reboot_required', 'rejected', 'failed')),
    -- ChangeConfiguration status per key, e.g. {"LocalAuthorizeOffline": "Accepted"}.
    results         jsonb NOT NULL DEFAULT '{}',
    detail          text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The session-end outbox: one row per committed end of a transaction at a charger whose
-- installation reports ends to a provider. Written in the same database transaction as the
-- stop, delivered by auth/session_ends.py with retries until the provider answers 2xx, then
-- deleted. No foreign key: a row must survive its charger or installation being deleted long
-- enough for the sender to decide what to do with it.
CREATE TABLE auth_session_ends (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    installation_id bigint NOT NULL,
    -- The hook's JSON body (camelCase), fixed at the stop.
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    -- When the next attempt is due; a claimed row is leased by moving this into the future,
    -- so a process killed mid-delivery leaves it to be retried after the lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_session_ends_due_idx ON auth_session_ends (next_attempt_at);
CREATE INDEX auth_session_ends_installation_idx ON auth_session_ends (installation_id);

-- A transaction's end enters the outbox by trigger, in the very transaction that commits the
-- stop, however the writer writes it (an UPDATE that sets stopped_at, or a transaction
-- inserted already stopped): so a reported end is always a committed one, a resent
-- StopTransaction (stopped_at already set) is not reported twice, and no handler code is
-- needed. Only for chargers whose installation, at the stop, is in webhook mode with a
-- sessionEndUrl. It must never fail: a failing trigger would fail the writer's batch.
CREATE FUNCTION auth_enqueue_session_end() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    installation bigint;
BEGIN
    SELECT i.id INTO installation
      FROM chargers c JOIN installations i ON i.id = c.installation_id
     WHERE c.id = NEW.charger_id
       AND i.authorization_mode = 'webhook'
       AND i.webhook ? 'sessionEndUrl';
    IF installation IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO auth_session_ends (installation_id, payload) VALUES (installation,
        jsonb_build_object(
            'chargerId', NEW.charger_id,
            'connectorId', NEW.connector_id,
            'idTag', NEW.id_tag,
            'installationId', installation,
            'sessionId', NEW.external_session_id,
            'transactionId', NEW.id,
            'startedAt', to_char(NEW.started_at AT TIME ZONE 'UTC',
                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'stoppedAt', to_char(NEW.stopped_at AT TIME ZONE 'UTC',
                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'meterStart', NEW.meter_start,
            'meterStop', NEW.meter_stop,
            'energyWh', greatest(0, coalesce(NEW.meter_stop - NEW.meter_start, 0)),
            'reason', NEW.stop_reason));
    -- Wakes the senders at once; identical notifications of one transaction are sent once.
    PERFORM pg_notify('evgate_session_end', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER transactions_stop_auth_session_end
    AFTER UPDATE OF stopped_at ON transactions
    FOR EACH ROW WHEN (OLD.stopped_at IS NULL AND NEW.stopped_at IS NOT NULL)
    EXECUTE FUNCTION auth_enqueue_session_end();
CREATE TRIGGER transactions_insert_stopped_auth_session_end
    AFTER INSERT ON transactions
    FOR EACH ROW WHEN (NEW.stopped_at IS NOT NULL)
    EXECUTE FUNCTION auth_enqueue_session_end();
