-- The idle-period trigger (0013) ran for every stored StatusNotification of a connector: a
-- fleet's statuses are mostly Available / Preparing / Charging one after another, and each
-- ran the function and its UPDATE of the open transaction for nothing. An update now runs it
-- only when the status moves into or within SuspendedEV / SuspendedEVSE / Finishing (which may
-- open a period) or out of them (which closes one): a period of the connector's open
-- transaction is open only while the stored status is one of them (0024 reopens periods of
-- stopped transactions only, which this function never touches), so a move between two other
-- statuses has nothing to close. A connector's first status (its INSERT) still runs it, as
-- before. Two triggers, because an INSERT trigger's WHEN cannot name OLD. See
-- tests/storage/test_transaction_stops.py (the idle trigger's test).
DROP TRIGGER connectors_idle ON connectors;
CREATE TRIGGER connectors_idle_insert AFTER INSERT ON connectors
    FOR EACH ROW WHEN (NEW.connector_id > 0) EXECUTE FUNCTION transactions_idle();
CREATE TRIGGER connectors_idle_update AFTER UPDATE ON connectors
    FOR EACH ROW WHEN (
        NEW.connector_id > 0
        AND (NEW.status IN ('SuspendedEV', 'SuspendedEVSE', 'Finishing')
             OR OLD.status IN ('SuspendedEV', 'SuspendedEVSE', 'Finishing'))
    ) EXECUTE FUNCTION transactions_idle();
