-- Load management (issue 18): circuits (breakers, in a tree), the chargers in them, what the
-- smart-charging engine told each charger (charging_profile_pushes) and the operator's own
-- charging profiles. Currents are amperes per phase.
CREATE TABLE circuits (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    max_current double precision NOT NULL CHECK (max_current > 0 AND max_current <= 100000),
    phases smallint NOT NULL DEFAULT 3 CHECK (phases IN (1, 3)),
    -- RESTRICT: a circuit with sub-circuits cannot be deleted (the API answers 409).
    parent_circuit_id bigint REFERENCES circuits (id) ON DELETE RESTRICT,
    min_charge_point_current double precision NOT NULL DEFAULT 6
        CHECK (min_charge_point_current >= 0 AND min_charge_point_current <= 100000),
    offline_reserved_current double precision NOT NULL DEFAULT 0
        CHECK (offline_reserved_current >= 0 AND offline_reserved_current <= max_current),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX circuits_parent ON circuits (parent_circuit_id);

-- A charger's membership: apart from the chargers table (a charger needs none), gone with
-- the charger; RESTRICT keeps a circuit with chargers from being deleted.
CREATE TABLE circuit_chargers (
    charger_id text PRIMARY KEY REFERENCES chargers (id) ON DELETE CASCADE,
    circuit_id bigint NOT NULL REFERENCES circuits (id) ON DELETE RESTRICT,
    max_current double precision NOT NULL CHECK (max_current > 0 AND max_current <= 100000),
    phase_rotation text NOT NULL DEFAULT 'RST'
);
CREATE INDEX circuit_chargers_circuit ON circuit_chargers (circuit_id);

-- Every SetChargingProfile the engine sent and what came of it (accepted, rejected,
-- unanswered), the latest per transaction is what the charger was told.
CREATE TABLE charging_profile_pushes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id text NOT NULL,
    connector_id integer NOT NULL,
    transaction_id integer,
    purpose text NOT NULL,
    stack_level integer NOT NULL,
    limit_amps double precision NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'unanswered')),
    sent_at timestamptz NOT NULL,
    answered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charging_profile_pushes_charger ON charging_profile_pushes (charger_id, id);

-- The operator's charging profiles (POST /api/v1/chargers/{id}/charging-profiles): what each
-- charger was told through the API and what it answered. The id is the chargingProfileId
-- sent; the engine's profiles use other ids and another stack level.
CREATE TABLE charging_profiles (
    id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000) PRIMARY KEY,
    charger_id text NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    connector_id integer NOT NULL,
    purpose text NOT NULL,
    stack_level integer NOT NULL,
    profile jsonb NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charging_profiles_charger ON charging_profiles (charger_id, id);
