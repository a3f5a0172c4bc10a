-- Variants, stock reservations, payments and refunds (issue "Commerce a real store can run").
--
-- A product now has options (`[{"name": "size", "values": ["S", "M"]}]`) and one or more
-- variants, each a sellable SKU with its own stock, optional price override and active flag.
-- Every existing product becomes a product with one variant (no options, same sku, same
-- stock, the product's price).

ALTER TABLE products ADD COLUMN options jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(options) = 'array');

CREATE TABLE product_variants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id  bigint NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    sku         text NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    -- {"size": "M", "colour": "red"}: one value for each of the product's options.
    options     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
    -- NULL: the product's price.
    price       bigint CHECK (price IS NULL OR price >= 0),
    stock       integer NOT NULL CHECK (stock >= 0),
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX product_variants_sku_key ON product_variants (sku);
-- One variant per combination of option values (also the index of a product's variants).
CREATE UNIQUE INDEX product_variants_options_key ON product_variants (product_id, options);
-- `option=size:M` list filters: containment on the variants' options.
CREATE INDEX product_variants_options_idx ON product_variants USING gin (options jsonb_path_ops);

INSERT INTO product_variants (product_id, sku, options, price, stock, is_active, created_at,
                              updated_at)
SELECT id, sku, '{}', NULL, stock, true, created_at, updated_at FROM products ORDER BY id;

-- Variant stock is the only stock: products.stock goes (a product's stock in its body is the
-- sum over its active variants, computed when read). A rolled-up copy kept by a trigger was
-- tried and dropped: the trigger locks the product row after the variant row, so two checkouts
-- of different variants of one product can deadlock whatever order they lock variants in.
-- `in_stock=true` asks whether an active variant has stock, through the (product_id, options)
-- index; no index covers stock, so checkout's stock updates stay HOT updates.
ALTER TABLE products DROP COLUMN stock;

-- Cart and order lines point at variants (product_id stays beside it: carts and orders are
-- read by product too, and an order line keeps its product even if the variant is removed).
ALTER TABLE cart_items ADD COLUMN variant_id bigint REFERENCES product_variants (id) ON DELETE CASCADE;
UPDATE cart_items ci SET variant_id = v.id FROM product_variants v WHERE v.product_id = ci.product_id;
ALTER TABLE cart_items ALTER COLUMN variant_id SET NOT NULL;
ALTER TABLE cart_items DROP CONSTRAINT cart_items_pkey;
ALTER TABLE cart_items ADD PRIMARY KEY (user_id, variant_id);

ALTER TABLE order_items ADD COLUMN variant_id bigint REFERENCES product_variants (id);
ALTER TABLE order_items ADD COLUMN options jsonb NOT NULL DEFAULT '{}';
-- Units given back by refunds with restock (never more than were sold).
ALTER TABLE order_items ADD COLUMN restocked integer NOT NULL DEFAULT 0;
UPDATE order_items oi SET variant_id = v.id FROM product_variants v WHERE v.product_id = oi.product_id;
ALTER TABLE order_items ALTER COLUMN variant_id SET NOT NULL;
ALTER TABLE order_items DROP CONSTRAINT order_items_pkey;
ALTER TABLE order_items ADD PRIMARY KEY (order_id, variant_id);
ALTER TABLE order_items ADD CONSTRAINT order_items_restock_within
    CHECK (restocked BETWEEN 0 AND quantity);
CREATE INDEX order_items_variant_idx ON order_items (variant_id);

-- A fully refunded order is `refunded`.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'));

-- Stock held for an order while its payment is pending: `held` until payment confirms it
-- (`committed`) or a cancel or the expiry job gives it back (`released`). The stock itself was
-- taken from the variant at checkout, so available stock never counts held units twice.
CREATE TABLE stock_reservations (
    order_id    bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    variant_id  bigint NOT NULL REFERENCES product_variants (id),
    quantity    integer NOT NULL CHECK (quantity >= 1),
    state       text NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'committed', 'released')),
    expires_at  timestamptz NOT NULL,
    settled_at  timestamptz,
    PRIMARY KEY (order_id, variant_id)
);
CREATE INDEX stock_reservations_expiry_idx ON stock_reservations (expires_at) WHERE state = 'held';

-- Existing orders: pending ones hold their stock for the default 30 minutes from creation,
-- paid and later ones committed it, cancelled ones released it.
INSERT INTO stock_reservations (order_id, variant_id, quantity, state, expires_at, settled_at)
SELECT oi.order_id, oi.variant_id, oi.quantity,
       CASE o.status WHEN 'pending' THEN 'held' WHEN 'cancelled' THEN 'released' ELSE 'committed' END,
       o.created_at + interval '30 minutes',
       CASE WHEN o.status = 'pending' THEN NULL ELSE o.updated_at END
  FROM order_items oi JOIN orders o ON o.id = oi.order_id;

-- One row per attempt to pay an order. `captured` and `refunded` are running totals in minor
-- units; the CHECKs make "never refund more than was captured" hold even against a bug.
CREATE TABLE payments (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id        bigint NOT NULL REFERENCES orders (id),
    provider        text NOT NULL CHECK (provider IN ('test', 'stripe')),
    reference       text,
    status          text NOT NULL CHECK (status IN ('pending', 'authorized', 'captured', 'failed',
                                                    'refunded', 'partially_refunded', 'voided')),
    amount          bigint NOT NULL CHECK (amount > 0),
    captured        bigint NOT NULL DEFAULT 0 CHECK (captured BETWEEN 0 AND amount),
    refunded        bigint NOT NULL DEFAULT 0 CHECK (refunded BETWEEN 0 AND captured),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    failure_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_order_idx ON payments (order_id, id);
CREATE UNIQUE INDEX payments_reference_key ON payments (provider, reference) WHERE reference IS NOT NULL;
-- At most one live payment per order: a new attempt only after the last one failed or was voided.
CREATE UNIQUE INDEX payments_one_live_per_order ON payments (order_id)
    WHERE status NOT IN ('failed', 'voided');

CREATE TABLE refunds (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id  bigint NOT NULL REFERENCES payments (id),
    order_id    bigint NOT NULL REFERENCES orders (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    status      text NOT NULL CHECK (status IN ('succeeded', 'pending', 'failed')),
    reference   text,
    reason      text CHECK (reason IS NULL OR length(reason) <= 500),
    -- [{"variant_id": 7, "quantity": 1}]: the units this refund put back on sale.
    restocked   jsonb NOT NULL DEFAULT '[]',
    -- The caller's Idempotency-Key and a digest of what it asked: a retry finds this row.
    idempotency_key text CHECK (idempotency_key IS NULL OR length(idempotency_key) <= 255),
    request_hash    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_order_idx ON refunds (order_id, id);
CREATE UNIQUE INDEX refunds_idempotency_key ON refunds (order_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Provider webhook deliveries already applied: an event id is applied once; the exact same
-- signed delivery again (same signature timestamp) is a replay and refused.
CREATE TABLE payment_events (
    provider     text NOT NULL,
    event_id     text NOT NULL,
    signed_at    bigint NOT NULL,
    type         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
