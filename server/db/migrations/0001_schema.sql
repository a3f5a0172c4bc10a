-- The whole schema of the v1 contract. Money is bigint minor units; the constraints below are the
-- last line of defence behind the service layer (stock never negative, unique skus and e-mails).

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text NOT NULL,
    name          text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin', 'service')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_lowercase CHECK (email = lower(email))
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE categories (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug       text NOT NULL CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    parent_id  bigint REFERENCES categories (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT categories_not_own_parent CHECK (parent_id IS NULL OR parent_id <> id)
);
CREATE UNIQUE INDEX categories_slug_key ON categories (slug);

CREATE TABLE products (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         text NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    category_id bigint REFERENCES categories (id) ON DELETE SET NULL,
    price       bigint NOT NULL CHECK (price >= 0),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock       integer NOT NULL CHECK (stock >= 0),
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    search      tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('simple', name), 'A') ||
                    setweight(to_tsvector('simple', description), 'B')) STORED
);
CREATE UNIQUE INDEX products_sku_key ON products (sku);
CREATE INDEX products_search_idx ON products USING gin (search);
-- Keyset pagination: one index per sort order, id as the tie-breaker.
CREATE INDEX products_created_idx ON products (created_at DESC, id DESC);
CREATE INDEX products_price_idx ON products (price, id);
CREATE INDEX products_name_idx ON products (name, id);
CREATE INDEX products_category_idx ON products (category_id, created_at DESC, id DESC);

CREATE TABLE product_stats (
    product_id bigint PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
    views      bigint NOT NULL DEFAULT 0 CHECK (views >= 0),
    units_sold bigint NOT NULL DEFAULT 0 CHECK (units_sold >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE promotions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code         text NOT NULL CHECK (length(code) BETWEEN 1 AND 64),
    kind         text NOT NULL CHECK (kind IN ('percent', 'fixed', 'buy_x_get_y')),
    value        bigint NOT NULL DEFAULT 0 CHECK (value >= 0),
    buy_quantity integer CHECK (buy_quantity IS NULL OR buy_quantity >= 1),
    get_quantity integer CHECK (get_quantity IS NULL OR get_quantity >= 1),
    min_subtotal bigint NOT NULL DEFAULT 0 CHECK (min_subtotal >= 0),
    product_ids  bigint[],
    category_ids bigint[],
    starts_at    timestamptz,
    ends_at      timestamptz,
    usage_limit  integer CHECK (usage_limit IS NULL OR usage_limit >= 0),
    times_used   integer NOT NULL DEFAULT 0 CHECK (times_used >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT promotions_percent_range CHECK (kind <> 'percent' OR value BETWEEN 1 AND 100),
    CONSTRAINT promotions_bxgy_quantities CHECK (
        kind <> 'buy_x_get_y' OR (buy_quantity IS NOT NULL AND get_quantity IS NOT NULL)),
    CONSTRAINT promotions_usage_within_limit CHECK (usage_limit IS NULL OR times_used <= usage_limit),
    CONSTRAINT promotions_dates_ordered CHECK (starts_at IS NULL OR ends_at IS NULL OR starts_at < ends_at)
);
-- Codes are case-insensitive.
CREATE UNIQUE INDEX promotions_code_key ON promotions (lower(code));

CREATE TABLE carts (
    user_id        bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    promotion_code text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cart_items (
    user_id    bigint NOT NULL REFERENCES carts (user_id) ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    quantity   integer NOT NULL CHECK (quantity BETWEEN 1 AND 999),
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, product_id)
);

CREATE TABLE orders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          bigint NOT NULL REFERENCES users (id),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    subtotal         bigint NOT NULL CHECK (subtotal >= 0),
    discount         bigint NOT NULL CHECK (discount >= 0 AND discount <= subtotal),
    tax              bigint NOT NULL CHECK (tax >= 0),
    total            bigint NOT NULL CHECK (total = subtotal - discount + tax),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    promotion_code   text,
    shipping_address jsonb,
    note             text CHECK (note IS NULL OR length(note) <= 500),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_idx ON orders (user_id, id DESC);
CREATE INDEX orders_status_idx ON orders (status, created_at);
CREATE INDEX orders_created_idx ON orders (created_at);

CREATE TABLE order_items (
    order_id   bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES products (id),
    sku        text NOT NULL,
    name       text NOT NULL,
    quantity   integer NOT NULL CHECK (quantity >= 1),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    line_total bigint NOT NULL CHECK (line_total >= 0),
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX order_items_product_idx ON order_items (product_id);

-- One row per issued refresh token. A family is one login; rotating a token marks it used and
-- issues the next one in the same family. Presenting a used token revokes the whole family.
CREATE TABLE refresh_tokens (
    jti         uuid PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

CREATE TABLE idempotency_keys (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    text NOT NULL,
    state           text NOT NULL DEFAULT 'in_flight' CHECK (state IN ('in_flight', 'done')),
    response_status integer,
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- Transactional outbox: e-mails are written with the event that causes them and delivered later.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    dedupe_key      text,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE UNIQUE INDEX outbox_dedupe_key ON outbox (dedupe_key) WHERE dedupe_key IS NOT NULL;
