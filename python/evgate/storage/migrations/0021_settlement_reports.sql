-- Partner and sub-operator billing on the CDR, and settlement reports (issue 20).

-- The partner a transaction is billed to: the partner of its id tag's user when its CDR was
-- written (the stop), kept even if the user leaves the partner or the partner is deleted later
-- (so no foreign key: a CDR is a record of what happened). NULL: billed to nobody's partner.
ALTER TABLE cdrs ADD COLUMN partner_id bigint;
-- The sub-operator the transaction is settled to: its charger's owner when its CDR was written,
-- kept when the charger changes hands or is deleted (no foreign key, as partner_id). NULL: the
-- operator's own charger. Row-level security on cdrs still follows the charger's current owner
-- (migration 0020); settlement follows this column.
ALTER TABLE cdrs ADD COLUMN sub_operator_id bigint;
-- An owner's CDRs recorded in a period (its settlement reports).
CREATE INDEX cdrs_partner ON cdrs (partner_id, created_at) WHERE partner_id IS NOT NULL;
CREATE INDEX cdrs_sub_operator ON cdrs (sub_operator_id, created_at)
    WHERE sub_operator_id IS NOT NULL;

-- A settlement report: what a partner (its members' priced CDRs: cdrs.partner_id) or a
-- sub-operator (the priced CDRs of its chargers as they stopped: cdrs.sub_operator_id) is
-- settled for a period [period_start, period_end): the CDRs recorded in it (cdrs.created_at,
-- so that a CDR arriving after its period's report is in the next one, and consecutive
-- periods count each CDR once), in one currency: a period whose CDRs are in several currencies
-- has one report per currency. Sums of the CDRs' prices, exact (numeric), never converted
-- between currencies. Made on demand (any period, again and again: each a new report, the
-- figures as of its making) or monthly (the previous calendar month in UTC, once per owner and
-- currency across every process: the unique indexes below, inserted ON CONFLICT DO NOTHING).
-- A report is a record, kept whatever becomes of its owner (no foreign keys). Never changed
-- once made.
CREATE TABLE settlement_reports (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id      bigint,
    sub_operator_id bigint,
    kind            text NOT NULL CHECK (kind IN ('onDemand', 'monthly')),
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    transactions    integer NOT NULL CHECK (transactions >= 0),
    energy_wh       bigint NOT NULL,
    total_excl_tax  numeric(20, 4) NOT NULL,
    tax             numeric(20, 4) NOT NULL,
    total_incl_tax  numeric(20, 4) NOT NULL,
    -- Of those, the CDRs stopped before the period (recorded in it, late: the catalog's
    -- "sessions that happened in previous periods"); the rest stopped in it.
    prev_transactions   integer NOT NULL CHECK (prev_transactions BETWEEN 0 AND transactions),
    prev_energy_wh      bigint NOT NULL,
    prev_total_excl_tax numeric(20, 4) NOT NULL,
    prev_tax            numeric(20, 4) NOT NULL,
    prev_total_incl_tax numeric(20, 4) NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((partner_id IS NULL) <> (sub_operator_id IS NULL)),
    CHECK (period_end > period_start)
);
CREATE INDEX settlement_reports_partner ON settlement_reports (partner_id, id)
    WHERE partner_id IS NOT NULL;
CREATE INDEX settlement_reports_sub_operator ON settlement_reports (sub_operator_id, id)
    WHERE sub_operator_id IS NOT NULL;
CREATE UNIQUE INDEX settlement_reports_monthly_partner
    ON settlement_reports (partner_id, period_start, currency)
    WHERE kind = 'monthly' AND partner_id IS NOT NULL;
CREATE UNIQUE INDEX settlement_reports_monthly_sub_operator
    ON settlement_reports (sub_operator_id, period_start, currency)
    WHERE kind = 'monthly' AND sub_operator_id IS NOT NULL;

-- Closed to tenants (migration 0020) but for a sub-operator's own reports (which it may also
-- make: the application computes them as the owner, from the CDRs recorded as the tenant's,
-- which its row-level security on cdrs may no longer show); never a partner's (a partner is the
-- operator's customer, not a tenant's).
ALTER TABLE settlement_reports ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format('CREATE POLICY tenant ON settlement_reports TO %I'
                   ' USING (sub_operator_id = evgate_tenant())', evgate_tenant_role());
END
$$;
