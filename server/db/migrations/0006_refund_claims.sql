-- A refund is written `pending` before the provider is asked (server/services/payments/refunds.py).
-- When the provider's answer is lost (a timeout, a 5xx after it acted), the claim stays
-- pending and counted, and is asked again with the same provider idempotency key: by a retry
-- with the same Idempotency-Key, or by the refund-settling job. `restock_plan` keeps the units
-- the claim asked to put back on sale, so whoever settles it restocks what was asked.
ALTER TABLE refunds ADD COLUMN IF NOT EXISTS restock_plan jsonb NOT NULL DEFAULT '[]';
-- The job's lookup: claims the provider has not answered (a provider-pending refund has its
-- reference).
CREATE INDEX IF NOT EXISTS refunds_unanswered_idx ON refunds (created_at)
    WHERE status = 'pending' AND reference IS NULL;
