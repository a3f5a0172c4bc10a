"""Demo and load-test catalog: `storefront seed --products N [--categories C]`.

Deterministic and idempotent: product number n is always sku `SEED-000001`... with the same name,
category, price, stock and dates (every value is a hash of n, computed by PostgreSQL), and a run
only "tops up" to N: numbers whose sku already exists are skipped, so running it twice keeps one
copy, and `--products 1000000` after `--products 1000` adds the 999 000 missing ones.

The rows are generated inside PostgreSQL (`INSERT ... SELECT ... FROM generate_series`) in batches
of `_BATCH`, so a million products take well under two minutes (docs/performance.md, "Lists at
1M products"); the tables are ANALYZEd afterwards so the planner knows the new sizes at once.

The catalog looks like a shop's:
- categories `category-1`..`category-C` (default: one per 2 000 products, between 10 and 500),
  two levels: the first C/25 are departments, every other one is a child of a department;
- category sizes are skewed (a continuous Zipf, s = 1: category-1 gets ~10 % of a 500-category
  catalog, the last ones a few hundred of a million), nouns are skewed the same way;
- prices are log-uniform between 1.99 and about 2 500 (always ending in 99 minor units);
- 8 % of the products are out of stock, 3 % are inactive; a tenth come in sizes S/M/L
  (three variants sharing the stock), the rest as one variant;
- names and descriptions are built from small vocabularies (adjective, colour, noun, material,
  use), a long tail of 2 000 made-up brands and the model number, so full-text search finds
  common words, rare ones and single products;
- created_at walks forward about 30 s per product from 2024-01-01 UTC with up to 10 min of jitter.
"""

from __future__ import annotations

import asyncpg

_ADJECTIVES = (
    "classic",
    "vintage",
    "modern",
    "rugged",
    "compact",
    "deluxe",
    "eco",
    "smart",
    "silent",
    "bright",
    "travel",
    "pro",
    "mini",
    "ultra",
    "organic",
    "handmade",
    "foldable",
    "wireless",
    "waterproof",
    "heavy-duty",
)
_NOUNS = (
    "backpack",
    "lamp",
    "kettle",
    "headphones",
    "notebook",
    "jacket",
    "mug",
    "chair",
    "keyboard",
    "blanket",
    "bottle",
    "speaker",
    "watch",
    "sneakers",
    "tent",
    "camera",
    "desk",
    "pillow",
    "umbrella",
    "wallet",
    "scarf",
    "teapot",
    "skillet",
    "monitor",
    "bicycle",
    "helmet",
    "candle",
    "vase",
    "rug",
    "drone",
    "telescope",
    "hammock",
    "typewriter",
    "accordion",
    "metronome",
    "sextant",
)
_COLOURS = (
    "black",
    "white",
    "red",
    "blue",
    "green",
    "grey",
    "navy",
    "olive",
    "orange",
    "yellow",
    "teal",
    "burgundy",
)
_MATERIALS = (
    "cotton",
    "leather",
    "steel",
    "aluminium",
    "bamboo",
    "oak",
    "ceramic",
    "glass",
    "wool",
    "recycled plastic",
)
_USES = (
    "everyday use",
    "the office",
    "the kitchen",
    "hiking",
    "camping",
    "travel",
    "the garden",
    "gifts",
    "students",
    "the studio",
)

# Brand names are made of three of these syllables (brand k: digits of k in base 20), so there
# are `_BRANDS` distinct made-up words, Zipf-distributed like a shop's long tail of makers. Besides
# looking real, the long tail matters to the planner: a word PostgreSQL has no statistics for
# (a model number, a rare maker) is estimated from the rarest word it has, and a catalog whose
# whole vocabulary is a hundred common words makes every unknown word look common.
_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "zu",
    "bel",
    "cor",
    "dan",
    "el",
    "fin",
    "gar",
    "hal",
    "ix",
    "jo",
    "kel",
    "lum",
    "nor",
    "pax",
)
_BRANDS = 2000
_BASE = len(_SYLLABLES)

_BATCH = 100_000
MIN_CATEGORIES, MAX_CATEGORIES, PRODUCTS_PER_CATEGORY = 10, 500, 2000
CHILDREN_PER_DEPARTMENT = 25


def default_categories(products: int) -> int:
    """The category count when `--categories` is not given: a shop's spread for its size."""
    return max(MIN_CATEGORIES, min(MAX_CATEGORIES, products // PRODUCTS_PER_CATEGORY))


def departments(categories: int) -> int:
    """How many of `categories` are top-level (the others are their children)."""
    return max(1, -(-categories // CHILDREN_PER_DEPARTMENT))


def sku(n: int) -> str:
    return f"SEED-{n:06d}"


# u(k): a uniform number in [0, 1) drawn from product number n with salt k (hashint8extended is
# PostgreSQL's portable 64-bit hash, the one hash partitioning relies on).
def _u(salt: int) -> str:
    return f"((hashint8extended(n, {salt}) & 2147483647)::float8 / 2147483648.0)"


def _pick(array: str, length: str, salt: int, *, skewed: bool = False) -> str:
    """A 1-based index into `array` of `length` elements: uniform, or Zipf-like when skewed."""
    if skewed:
        return f"({array})[least({length}, floor(power({length} + 1, {_u(salt)}))::int)]"
    return f"({array})[1 + floor({length} * {_u(salt)})::int]"


_PRODUCTS_SQL = f"""
WITH candidate AS (
  SELECT * FROM (
    SELECT n % 10 = 0 AS sized,
           'SEED-' || lpad(n::text, greatest(6, length(n::text)), '0') AS sku,
           initcap(adjective) || ' ' || colour || ' ' || noun || ' ' || n AS name,
           'A ' || adjective || ' ' || noun || ' in ' || material || ' by ' || brand
               || ', made for ' || purpose || '. Model ' || n || ', ' || finish || ' finish.'
               AS description,
           CASE WHEN cardinality($7::bigint[]) > 0 THEN
               {_pick("$7::bigint[]", "cardinality($7::bigint[])", 1, skewed=True)}
           END AS category_id,
           floor(exp(ln(199.0) + {_u(2)} * ln(250000.0 / 199.0)))::bigint / 100 * 100 + 99
               AS price,
           CASE WHEN {_u(3)} < 0.08 THEN 0 ELSE 1 + floor(499 * power({_u(4)}, 2))::int END
               AS stock,
           {_u(5)} >= 0.03 AS is_active,
           timestamptz '2024-01-01 00:00:00+00'
               + make_interval(secs => n * 30 + floor(600 * {_u(6)})) AS created_at
      FROM (
        SELECT n,
               {_pick("$3::text[]", "cardinality($3::text[])", 7)} AS adjective,
               {_pick("$3::text[]", "cardinality($3::text[])", 8)} AS finish,
               {_pick("$4::text[]", "cardinality($4::text[])", 9, skewed=True)} AS noun,
               {_pick("$5::text[]", "cardinality($5::text[])", 10)} AS colour,
               {_pick("$6::text[]", "cardinality($6::text[])", 11)} AS material,
               {_pick("$9::text[]", "cardinality($9::text[])", 12)} AS purpose,
               initcap(($10::text[])[1 + b / {_BASE**2} % {_BASE}] || ($10::text[])[1 + b % {_BASE}]
                       || ($10::text[])[1 + b / {_BASE} % {_BASE}]) AS brand
          FROM (
            SELECT n, least({_BRANDS}, floor(power({_BRANDS + 1}, {_u(13)}))::int) AS b
              FROM generate_series($1::bigint, $2::bigint) AS n
          ) AS numbers
      ) AS words
  ) AS fresh
  WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.sku = fresh.sku)
), made AS (
  INSERT INTO products
      (sku, name, description, category_id, price, currency, options, is_active, created_at,
       updated_at)
  SELECT sku, name, description, category_id, price, $8,
         CASE WHEN sized THEN '[{{"name": "size", "values": ["S", "M", "L"]}}]'::jsonb
              ELSE '[]'::jsonb END,
         is_active, created_at, created_at
    FROM candidate
  ON CONFLICT (sku) DO NOTHING
  RETURNING id, sku, created_at
), variants AS (
  -- One variant per product, or S/M/L for the sized tenth (the stock split between them).
  INSERT INTO product_variants (product_id, sku, options, stock, created_at, updated_at)
  SELECT made.id,
         CASE WHEN c.sized THEN made.sku || '-' || size.value ELSE made.sku END,
         CASE WHEN c.sized THEN jsonb_build_object('size', size.value) ELSE '{{}}'::jsonb END,
         CASE WHEN NOT c.sized THEN c.stock
              WHEN size.position = 1 THEN c.stock / 3 + c.stock % 3
              ELSE c.stock / 3 END,
         made.created_at, made.created_at
    FROM made
    JOIN candidate c ON c.sku = made.sku
   CROSS JOIN LATERAL unnest(CASE WHEN c.sized THEN ARRAY['S', 'M', 'L'] ELSE ARRAY[''] END)
         WITH ORDINALITY AS size(value, position)
  RETURNING 1
)
SELECT count(*) FROM made
"""


async def seed_catalog(
    pool: asyncpg.Pool, products: int, categories: int | None = 10, *, currency: str = "USD"
) -> tuple[int, int]:
    """Top the catalog up to `categories` categories and `products` products (None: a default
    for the catalog's size); returns the rows added."""
    if categories is None:
        categories = default_categories(products)
    async with pool.acquire() as conn:
        added_categories = await _seed_categories(conn, categories)
        category_ids = [
            r["id"]
            for r in await conn.fetch(
                """SELECT c.id FROM generate_series(1, $1::int) AS i
                     JOIN categories c ON c.slug = 'category-' || i ORDER BY i""",
                categories,
            )
        ]
        added_products = 0
        for start in range(1, products + 1, _BATCH):
            async with conn.transaction():
                # Losing the last batch on a crash is harmless: a re-run tops it up again.
                await conn.execute("SET LOCAL synchronous_commit = off")
                added = await conn.fetchval(
                    _PRODUCTS_SQL,
                    start,
                    min(products, start + _BATCH - 1),
                    list(_ADJECTIVES),
                    list(_NOUNS),
                    list(_COLOURS),
                    list(_MATERIALS),
                    category_ids,
                    currency,
                    list(_USES),
                    list(_SYLLABLES),
                )
            added_products += int(added)
        if added_categories or added_products:
            await conn.execute("ANALYZE categories")
            await conn.execute("ANALYZE products")
            await conn.execute("ANALYZE product_variants")
    return added_categories, added_products


async def _seed_categories(conn: asyncpg.Connection, categories: int) -> int:
    """`category-1`..`category-C`: the departments first, then their children."""
    top = departments(categories)
    added = 0
    for low, high, parent in (
        (1, min(top, categories), "NULL::bigint"),
        (
            top + 1,
            categories,
            f"(SELECT id FROM categories WHERE slug = 'category-' || ((i - 1) % {top} + 1))",
        ),
    ):
        status = await conn.execute(
            f"""INSERT INTO categories (name, slug, parent_id)
                SELECT 'Category ' || i, 'category-' || i, {parent}
                  FROM generate_series($1::int, $2::int) AS i
                ON CONFLICT (slug) DO NOTHING""",
            low,
            high,
        )
        added += int(status.rsplit(" ", 1)[-1])
    return added
