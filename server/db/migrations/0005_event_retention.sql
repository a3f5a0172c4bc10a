-- The daily cleanup deletes old events with their finished deliveries (server/db/maintenance.py).
-- Deleting an event makes PostgreSQL look up its deliveries by `event_id` (the ON DELETE
-- CASCADE, and the cleanup's own "are they all finished" check); the UNIQUE
-- (subscription_id, event_id) index cannot serve that, so each event would scan the table.
--
-- Plain CREATE INDEX, not CONCURRENTLY (the runner applies each file in a transaction; see
-- 0002): it blocks delivery writes, not reads, while it builds.
CREATE INDEX IF NOT EXISTS webhook_deliveries_event_idx ON webhook_deliveries (event_id);
