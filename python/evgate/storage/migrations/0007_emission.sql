-- Emission (issue 6): what the handlers and command hooks need to produce events from real
-- state changes.

-- AuthorizationNotification / authorization.changed carry an authorizationId: every Authorize
-- gets one, drawn in the transaction that writes its events.
CREATE SEQUENCE authorization_ids AS bigint START 1;

-- DiagnosticsStatusNotification and ChargePointSyncConfigurationNotification carry a
-- requestId: evgate numbers the GetDiagnostics and GetConfiguration commands a charger
-- accepted from this sequence (the command API returns it in the Evgate-Request-Id header).
CREATE SEQUENCE command_request_ids AS bigint START 1;
-- The charger's latest accepted GetDiagnostics (its later status notifications carry it).
ALTER TABLE chargers ADD COLUMN diagnostics_request_id bigint;

-- The expiry sweeper looks for due reservations that are still held.
CREATE INDEX reservations_due ON reservations (expiry_date) WHERE status = 'Reserved';

-- When chargers.network_status was last set (the connection's time): a connect and a
-- disconnect written by different processes apply in the order they happened, not the order
-- they commit.
ALTER TABLE chargers ADD COLUMN network_status_at timestamptz;
