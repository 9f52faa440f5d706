-- Locations, tariffs and priced transactions (issue 19).

-- A tariff's terms as the operator gave them (the pricing room's Tariff, camelCase JSON); the
-- currency beside them, for the groups' one-currency rule.
CREATE TABLE tariffs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    terms       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- An ordered list of tariffs with their restrictions (``entries``, the pricing room's
-- GroupEntry list); ``currency`` is its tariffs' one currency (NULL while it has none).
CREATE TABLE tariff_groups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    currency    text,
    entries     jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Which tariffs a group names: a tariff in a group cannot be deleted (RESTRICT: 409).
CREATE TABLE tariff_group_tariffs (
    group_id    bigint NOT NULL REFERENCES tariff_groups (id) ON DELETE CASCADE,
    tariff_id   bigint NOT NULL REFERENCES tariffs (id) ON DELETE RESTRICT,
    PRIMARY KEY (group_id, tariff_id)
);
CREATE INDEX tariff_group_tariffs_tariff ON tariff_group_tariffs (tariff_id);

-- Where chargers stand: the catalog's fields as the operator gave them (camelCase JSON), the
-- timezone (time-of-day prices are read in it) and the tariff group of its chargers.
CREATE TABLE locations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body            jsonb NOT NULL,
    timezone        text,
    tariff_group_id bigint REFERENCES tariff_groups (id) ON DELETE RESTRICT,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A charger stands at one location at most (deleting a location with chargers: 409) and may
-- have a tariff group of its own, which wins over its location's.
ALTER TABLE chargers
    ADD COLUMN location_id bigint REFERENCES locations (id) ON DELETE RESTRICT,
    ADD COLUMN tariff_group_id bigint REFERENCES tariff_groups (id) ON DELETE RESTRICT;
CREATE INDEX chargers_location_idx ON chargers (location_id) WHERE location_id IS NOT NULL;

-- A transaction's tariff as at its StartTransaction (the pricing room's Snapshot; NULL: no
-- tariff applied), the times its connector was idle while it ran ([[from, to|null], ...],
-- kept by the trigger below), and its price once stopped (the pricing room's Price).
ALTER TABLE transactions
    ADD COLUMN tariff jsonb,
    ADD COLUMN idle_periods jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN price jsonb;
CREATE INDEX transactions_open ON transactions (charger_id, connector_id) WHERE stopped_at IS NULL;
ALTER TABLE cdrs ADD COLUMN price jsonb;

-- A connector's status changes into or out of SuspendedEV / SuspendedEVSE / Finishing open or
-- close an idle period of its open priced transaction, in the StatusNotification's own
-- database transaction (status_at: the charger's time, as the stop's is). Only statuses that
-- were stored fire it (a stale one is not written, so it changes nothing here either).
CREATE FUNCTION transactions_idle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('SuspendedEV', 'SuspendedEVSE', 'Finishing') THEN
        UPDATE transactions
        SET idle_periods = idle_periods || jsonb_build_array(jsonb_build_array(NEW.status_at, NULL))
        WHERE charger_id = NEW.charger_id AND connector_id = NEW.connector_id
          AND stopped_at IS NULL AND tariff IS NOT NULL
          AND (jsonb_array_length(idle_periods) = 0 OR idle_periods -> -1 -> 1 <> 'null'::jsonb);
    ELSE
        UPDATE transactions
        SET idle_periods = jsonb_set(idle_periods, '{-1,1}', to_jsonb(NEW.status_at))
        WHERE charger_id = NEW.charger_id AND connector_id = NEW.connector_id
          AND stopped_at IS NULL AND tariff IS NOT NULL
          AND jsonb_array_length(idle_periods) > 0 AND idle_periods -> -1 -> 1 = 'null'::jsonb;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER connectors_idle AFTER INSERT OR UPDATE ON connectors
    FOR EACH ROW WHEN (NEW.connector_id > 0) EXECUTE FUNCTION transactions_idle();
