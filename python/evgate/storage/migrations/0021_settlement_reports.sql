-- Partner billing on the CDR, and settlement reports (issue 20).

-- The partner a transaction is billed to: the partner of its id tag's user when its CDR was
-- written (the stop), kept even if the user leaves the partner or the partner is deleted later
-- (so no foreign key: a CDR is a record of what happened). NULL: billed to nobody's partner.
ALTER TABLE cdrs ADD COLUMN partner_id bigint;
-- A partner's CDRs of a period (its settlement reports).
CREATE INDEX cdrs_partner ON cdrs (partner_id, stopped_at) WHERE partner_id IS NOT NULL;
