-- A sub-operator's rows reference only rows it can see (issue 20).
--
-- PostgreSQL checks a foreign key as the referenced table's owner, past row-level security:
-- without these triggers a tenant's request could point its charger at another tenant's
-- location, tariff group, installation or circuit (or its id tag at a user, which no tenant
-- sees), take it over that way, and learn by the answers which ids exist. Each trigger looks
-- the referenced row up as the request's own role, so another tenant's row is what an absent
-- one is: the same foreign_key_violation naming the same constraint, which the stores already
-- answer (BadReference, 422). Outside a tenant's request (evgate.sub_operator unset: the
-- operator, the writer, the dispatcher) the WHEN clause skips them, so the owner's writes pay
-- nothing; an UPDATE fires them only when it sets the referencing column.
--
-- Only the tables a tenant's request writes, and not the references their row-level security
-- already checks (a policy on charger_id checks that column, the policies on sub_operator_id
-- that one, on insert and update).

CREATE FUNCTION evgate_tenant_reference() RETURNS trigger LANGUAGE plpgsql AS $$
-- Arguments: the column, the referenced table, its column and type, the constraint's name.
DECLARE
    value text := to_jsonb(NEW) ->> TG_ARGV[0];
    seen boolean;
BEGIN
    IF value IS NULL
       OR (TG_OP = 'UPDATE' AND value IS NOT DISTINCT FROM to_jsonb(OLD) ->> TG_ARGV[0]) THEN
        RETURN NEW;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT FROM %I WHERE %I = $1::%s)',
                   TG_ARGV[1], TG_ARGV[2], TG_ARGV[3])
       INTO seen USING value;
    IF NOT seen THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"',
                        TG_TABLE_NAME, TG_ARGV[4]
              USING ERRCODE = 'foreign_key_violation', CONSTRAINT = TG_ARGV[4],
                    TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA;
    END IF;
    RETURN NEW;
END
$$;

DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT c.conname, t.relname AS tab, a.attname AS col, r.relname AS ref,
               ra.attname AS refcol, format_type(ra.atttypid, ra.atttypmod) AS reftype
          FROM pg_constraint c
          JOIN pg_class t ON t.oid = c.conrelid
          JOIN pg_class r ON r.oid = c.confrelid
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
          JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
         WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
           AND r.relname NOT IN ('sub_operators', 'chargers')
           AND t.relnamespace = current_schema()::regnamespace
           AND t.relname = ANY (ARRAY['chargers', 'locations', 'circuits', 'tariffs',
                                      'tariff_groups', 'installations', 'id_tags',
                                      'bulk_commands', 'api_tokens', 'subscriptions',
                                      'circuit_chargers', 'tariff_group_tariffs'])
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OF %I ON %I FOR EACH ROW'
                       ' WHEN (evgate_tenant() IS NOT NULL)'
                       ' EXECUTE FUNCTION evgate_tenant_reference(%L, %L, %L, %L, %L)',
                       left('tenant_' || fk.conname, 63), fk.col, fk.tab,
                       fk.col, fk.ref, fk.refcol, fk.reftype, fk.conname);
    END LOOP;
END
$$;
