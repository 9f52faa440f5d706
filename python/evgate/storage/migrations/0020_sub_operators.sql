-- Sub-operators: tenants inside an operator (issue 20).
--
-- Chargers, locations, circuits, tariffs, tariff groups, installations, id tags, API tokens,
-- notification subscriptions and bulk commands may belong to one sub-operator
-- (sub_operator_id; NULL: the operator's own). A request made with a token scoped to a
-- sub-operator runs its queries as the database's tenant role with the setting
-- evgate.sub_operator set to the tenant's id, and PostgreSQL's row-level security shows that
-- role only the tenant's rows: every list, every id lookup, every update and delete of every
-- store is confined by the database itself, not by a WHERE clause each query must remember.
-- A table with row-level security and no policy for the role shows it nothing: every table of
-- the schema has row-level security (tests/storage/test_tenancy.py checks that a new one does
-- too), so a table added later is closed to tenants until a policy opens it.
--
-- The owner (the role evgate connects as: the writer, the dispatcher, unscoped API requests)
-- is not subject to row-level security (no FORCE), so the charger path pays nothing for it.

CREATE TABLE sub_operators (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sub_operators_name ON sub_operators (lower(name));

-- The sub-operator a scoped request acts for (NULL outside one). A column's default: what a
-- tenant creates is its own without the store naming it.
CREATE FUNCTION evgate_tenant() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('evgate.sub_operator', true), '')::bigint
$$;

-- Resources a sub-operator owns. A sub-operator that still owns one cannot be deleted (409):
-- its chargers and sites must be moved or deleted first. Its tokens and subscriptions go with
-- it (a deleted tenant's token stops working).
ALTER TABLE chargers ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE RESTRICT;
ALTER TABLE locations ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE RESTRICT;
ALTER TABLE circuits ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE RESTRICT;
ALTER TABLE tariffs ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE RESTRICT;
ALTER TABLE tariff_groups ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE RESTRICT;
ALTER TABLE installations ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE RESTRICT;
ALTER TABLE id_tags ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE RESTRICT;
ALTER TABLE bulk_commands ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE CASCADE;
ALTER TABLE subscriptions ADD COLUMN sub_operator_id bigint
    DEFAULT evgate_tenant() REFERENCES sub_operators (id) ON DELETE CASCADE;
CREATE INDEX chargers_sub_operator ON chargers (sub_operator_id) WHERE sub_operator_id IS NOT NULL;

-- The sub-operator an event is about, when not through its charger: events about a location,
-- tariff, circuit, installation, id tag or the sub-operator itself. A subscription of a
-- sub-operator receives an event whose charger is the tenant's (at fan-out) or whose
-- sub_operator_id is the tenant's; events written by a tenant's request are stamped by the
-- default.
ALTER TABLE outbox ADD COLUMN sub_operator_id bigint DEFAULT evgate_tenant();

-- The role of scoped requests: this database's own (roles belong to the whole cluster; a
-- shared one would let the owner of another database on the cluster, a member of it too, act
-- as a tenant here, and a second owner without the right to grant it could not migrate). Its
-- name is random and read back by evgate_tenant_role(): a database copied from this one (a
-- template) shares it. Creating it needs CREATEROLE (or a superuser), once.
DO $$
DECLARE
    role_name text := 'evgate_tenant_'
        || substr(md5(current_database() || clock_timestamp()::text || random()::text), 1, 16);
BEGIN
    EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
    EXECUTE format('GRANT %I TO CURRENT_USER', role_name);
    EXECUTE format('CREATE FUNCTION evgate_tenant_role() RETURNS text LANGUAGE sql IMMUTABLE'
                   ' AS %L', format('SELECT %L::text', role_name));
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                   current_schema(), role_name);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I',
                   current_schema(), role_name);
    -- Tables and sequences of later migrations too (their row-level security still has to
    -- open them).
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE'
                   ' ON TABLES TO %I', current_schema(), role_name);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES'
                   ' TO %I', current_schema(), role_name);
END
$$;

-- Trigger functions do the database's own bookkeeping, whoever's change fires them; with the
-- search path of this migration, whatever the caller's.
ALTER FUNCTION auth_enqueue_session_end() SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION transactions_idle() SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION user_row_notify() SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION user_member_notify() SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION user_group_notify() SECURITY DEFINER SET search_path FROM CURRENT;

-- Every table is closed to the tenant role unless a policy below opens it; the meter_values
-- partitions too (the tenant reads them through the parent, whose policy applies; a partition
-- named directly shows it nothing; storage/maintenance.py does the same for each new one).
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

DO $$
DECLARE
    t text;
    r text := evgate_tenant_role();
BEGIN
    -- Its own row, read only.
    EXECUTE format('CREATE POLICY tenant ON sub_operators FOR SELECT TO %I'
                   ' USING (id = evgate_tenant())', r);
    -- Which processes are alive (commands are routed to the one holding the charger).
    EXECUTE format('CREATE POLICY tenant ON cluster_instances FOR SELECT TO %I USING (true)', r);
    -- The tenant's own rows.
    FOREACH t IN ARRAY ARRAY['chargers', 'locations', 'circuits', 'tariffs', 'tariff_groups',
                             'installations', 'id_tags', 'bulk_commands', 'api_tokens',
                             'subscriptions']
    LOOP
        EXECUTE format('CREATE POLICY tenant ON %I TO %I'
                       ' USING (sub_operator_id = evgate_tenant())', t, r);
    END LOOP;
    -- Rows of the tenant's chargers.
    FOREACH t IN ARRAY ARRAY['charger_boot_info', 'connectors', 'transactions', 'reservations',
                             'meter_values', 'meter_series', 'data_transfers',
                             'charger_messages', 'cdrs', 'charger_offline_config',
                             'charger_owners', 'remote_calls', 'circuit_chargers',
                             'charging_profile_pushes', 'charging_profiles', 'commands',
                             'signed_certificates']
    LOOP
        EXECUTE format('CREATE POLICY tenant ON %I TO %I USING (charger_id IN'
                       ' (SELECT id FROM chargers WHERE sub_operator_id = evgate_tenant()))', t, r);
    END LOOP;
    -- Rows of the tenant's subscriptions.
    FOREACH t IN ARRAY ARRAY['deliveries', 'delivery_lanes', 'delivery_attempts']
    LOOP
        EXECUTE format('CREATE POLICY tenant ON %I TO %I USING (subscription_id IN'
                       ' (SELECT id FROM subscriptions WHERE sub_operator_id = evgate_tenant()))',
                       t, r);
    END LOOP;
    EXECUTE format('CREATE POLICY tenant ON meter_rollup_1m TO %I USING (series_id IN'
                   ' (SELECT s.id FROM meter_series s JOIN chargers c ON c.id = s.charger_id'
                   '   WHERE c.sub_operator_id = evgate_tenant()))', r);
    EXECUTE format('CREATE POLICY tenant ON tariff_group_tariffs TO %I USING (group_id IN'
                   ' (SELECT id FROM tariff_groups WHERE sub_operator_id = evgate_tenant()))', r);
    EXECUTE format('CREATE POLICY tenant ON auth_session_ends TO %I USING (installation_id IN'
                   ' (SELECT id FROM installations WHERE sub_operator_id = evgate_tenant()))', r);
    -- Events of the tenant's chargers, and those stamped with the tenant; what a tenant's
    -- request writes is stamped with it (the column's default).
    EXECUTE format('CREATE POLICY tenant ON outbox TO %I'
                   ' USING (sub_operator_id = evgate_tenant() OR charger_id IN'
                   '   (SELECT id FROM chargers WHERE sub_operator_id = evgate_tenant()))'
                   ' WITH CHECK (sub_operator_id = evgate_tenant())', r);
END
$$;
