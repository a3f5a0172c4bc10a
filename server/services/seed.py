"""Demo and load-test catalog: `storefront seed --products N [--categories C]`.

Deterministic (seeded RNG, skus `SEED-000001`...) and idempotent: running it twice keeps one copy.
"""

from __future__ import annotations

import random

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
)
_BATCH = 5000


async def seed_catalog(
    pool: asyncpg.Pool, products: int, categories: int = 10, *, currency: str = "USD"
) -> tuple[int, int]:
    """Insert up to `categories` categories and `products` products; returns rows added."""
    rng = random.Random(42)
    async with pool.acquire() as conn:
        added_categories = 0
        for i in range(1, categories + 1):
            status = await conn.execute(
                "INSERT INTO categories (name, slug) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING",
                f"Category {i}",
                f"category-{i}",
            )
            added_categories += int(status.rsplit(" ", 1)[-1])
        category_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM categories WHERE slug LIKE 'category-%' ORDER BY id"
            )
        ]
        added_products = 0
        for start in range(1, products + 1, _BATCH):
            numbers = range(start, min(products, start + _BATCH - 1) + 1)
            rows = [_product(n, rng, category_ids) for n in numbers]
            status = await conn.execute(
                """INSERT INTO products
                       (sku, name, description, category_id, price, currency, stock)
                   SELECT s, n, d, c, p, $6, st
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                 $7::int[]) AS t(s, n, d, c, p, st)
                   ON CONFLICT (sku) DO NOTHING""",
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
                currency,
                [r[5] for r in rows],
            )
            added_products += int(status.rsplit(" ", 1)[-1])
    return added_categories, added_products


def _product(
    n: int, rng: random.Random, category_ids: list[int]
) -> tuple[str, str, str, int | None, int, int]:
    adjective, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
    name = f"{adjective.title()} {noun} {n}"
    description = (
        f"A {adjective} {noun} for everyday use. Model {n}, {rng.choice(_ADJECTIVES)} finish."
    )
    category = rng.choice(category_ids) if category_ids else None
    price = rng.randrange(199, 50_000)
    stock = rng.randrange(0, 500)
    return f"SEED-{n:06d}", name, description, category, price, stock
