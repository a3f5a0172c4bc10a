"""Every product list shape stays cheap on a big, skewed catalog (0002_list_indexes.sql).

The catalog is the real seed (server/db/seed.py) at 200 000 products in 100 categories:
big enough that a sequential scan or a sort of a whole category costs thousands of pages, small
enough to build in seconds. The cost is measured in buffers touched (EXPLAIN ANALYZE BUFFERS), a
count that does not drift with the machine's speed, and the plans are read for what must not be
in them. docs/performance.md has the timings of the same queries at 1M products.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from server.db.catalog import ProductFilter, build_list_query
from server.db.seed import seed_catalog

PRODUCTS = 200_000
PAGE = 21  # the default page size and the one row that tells whether there is a next page
# The products table is ~11 000 pages here. A browse page (no text search) reads a few dozen,
# or a few dozen per category of a department's tree (~600 for category-1 and its 24 children).
BROWSE_BUFFERS = 1_000
# A text search reads the heap rows of its matches (GIN index, or the sort order's index for a
# common word), so it grows with the word's frequency; it must still stay well under a scan.
SEARCH_SHARE_OF_TABLE = 1 / 3


@pytest_asyncio.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    added = await seed_catalog(pool, PRODUCTS, None)
    assert added == (100, PRODUCTS)
    yield pool
    await pool.close()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _explain(
    pool: asyncpg.Pool, filters: ProductFilter, sort: str, after: tuple[object, int] | None = None
) -> tuple[dict[str, Any], int]:
    query, args = build_list_query(filters, sort, after, PAGE)
    raw = await pool.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", *args)
    plan = orjson.loads(raw)[0]["Plan"]
    return plan, plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]


BROWSE = [
    pytest.param(ProductFilter(), "-created", id="newest"),
    pytest.param(ProductFilter(), "price", id="cheapest"),
    pytest.param(ProductFilter(), "name", id="by-name"),
    pytest.param(ProductFilter(in_stock=True, min_price=1000, max_price=5000), "price", id="band"),
    pytest.param(ProductFilter(category_slug="category-1"), "-created", id="department-newest"),
    pytest.param(ProductFilter(category_slug="category-1"), "price", id="department-cheapest"),
    pytest.param(ProductFilter(category_slug="category-1"), "-price", id="department-dearest"),
    pytest.param(ProductFilter(category_slug="category-5"), "name", id="child-by-name"),
    pytest.param(ProductFilter(category_slug="category-99"), "price", id="small-category"),
]
SEARCH = [
    pytest.param(ProductFilter(query="teapot"), "-created", id="common-word"),
    pytest.param(ProductFilter(query="sextant"), "price", id="rare-word"),
    pytest.param(ProductFilter(query="SEED-123456"), "-created", id="no-match"),
    pytest.param(ProductFilter(category_slug="category-1", query="wallet"), "price", id="in-dept"),
    pytest.param(ProductFilter(category_slug="category-1", query="black"), "-created", id="dept-2"),
]


def _assert_no_table_scan(plan: dict[str, Any]) -> None:
    scanned = [n for n in _nodes(plan) if n["Node Type"] == "Seq Scan"]
    assert all(n["Relation Name"] != "products" for n in scanned), plan


def _sorted_rows(plan: dict[str, Any]) -> int:
    """How many rows the plan's sorts take in (a top-N sort outputs only the page)."""
    return sum(
        int(child["Actual Rows"] * child["Actual Loops"])
        for node in _nodes(plan)
        if node["Node Type"] == "Sort"
        for child in node["Plans"]
    )


@pytest.mark.parametrize("filters, sort", BROWSE)
async def test_a_browse_page_touches_few_pages(
    pool: asyncpg.Pool, filters: ProductFilter, sort: str
) -> None:
    plan, buffers = await _explain(pool, filters, sort)
    _assert_no_table_scan(plan)
    assert buffers < BROWSE_BUFFERS, (buffers, plan)
    # At most a page from each category of the tree is sorted, never a whole category.
    assert _sorted_rows(plan) <= PAGE * 25, plan


@pytest.mark.parametrize("filters, sort", SEARCH)
async def test_a_search_page_reads_far_less_than_the_table(
    pool: asyncpg.Pool, filters: ProductFilter, sort: str
) -> None:
    table = await pool.fetchval("SELECT relpages FROM pg_class WHERE relname = 'products'")
    plan, buffers = await _explain(pool, filters, sort)
    _assert_no_table_scan(plan)
    assert buffers < table * SEARCH_SHARE_OF_TABLE, (buffers, table, plan)


async def test_a_deep_page_costs_what_the_first_does(pool: asyncpg.Pool) -> None:
    """Keyset pagination: page 1 000 of a department by price is no dearer than page one."""
    filters = ProductFilter(category_slug="category-1")
    _, first_buffers = await _explain(pool, filters, "price")
    query, args = build_list_query(filters, "price", None, PAGE * 1000)
    rows = await pool.fetch(query, *args)
    last = rows[-1]
    assert len(rows) == PAGE * 1000  # the department really is that big
    deep, deep_buffers = await _explain(pool, filters, "price", (last["price"], last["id"]))
    assert deep["Actual Rows"] == PAGE
    assert deep_buffers < max(3 * first_buffers, 300), (first_buffers, deep_buffers)


async def test_the_seed_is_deterministic_and_tops_up(pool: asyncpg.Pool) -> None:
    """A second run adds nothing; the rows are a function of the product number."""
    assert await seed_catalog(pool, PRODUCTS, None) == (0, 0)
    row = await pool.fetchrow(
        "SELECT name, price, category_id IS NOT NULL AS placed FROM products"
        " WHERE sku = 'SEED-000042'"
    )
    assert row is not None and row["placed"] and row["price"] % 100 == 99
    # A tenth of the products come in three sizes; the rest are one variant each.
    sized = await pool.fetch(
        """SELECT v.sku, v.options FROM product_variants v JOIN products p ON p.id = v.product_id
            WHERE p.sku = 'SEED-000040' ORDER BY v.id"""
    )
    assert [(r["sku"], r["options"]) for r in sized] == [
        (f"SEED-000040-{s}", f'{{"size": "{s}"}}') for s in ("S", "M", "L")
    ]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM product_variants v JOIN products p ON p.id = v.product_id"
            " WHERE p.sku = 'SEED-000042'"
        )
        == 1
    )
    sizes = await pool.fetch(
        "SELECT count(*) AS n FROM products GROUP BY category_id ORDER BY n DESC"
    )
    # Skewed like a shop: the biggest category holds many times the median one.
    assert sizes[0]["n"] > 5 * sizes[len(sizes) // 2]["n"]
