-- Outbound webhooks (issue "Integrations"): subscriptions, the domain events written in the
-- transaction of the change they announce, and one delivery row per (subscription, event).

CREATE TABLE webhook_subscriptions (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url                  text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    event_types          text[] NOT NULL CHECK (cardinality(event_types) >= 1),
    secret               text NOT NULL CHECK (length(secret) BETWEEN 16 AND 200),
    is_active            boolean NOT NULL DEFAULT true,
    -- Failed deliveries in a row; the subscription is disabled when it reaches the limit.
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    disabled_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Every domain event, whether or not anyone subscribes (the delivery log refers to them).
CREATE TABLE events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type       text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_created_idx ON events (created_at);

CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id  bigint NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'succeeded', 'failed', 'dead')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_log_idx ON webhook_deliveries (subscription_id, id DESC);
