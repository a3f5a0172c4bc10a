-- Indexes for every product list shape at a million products (docs/performance.md, "Lists at 1M
-- products"; tests/integration/test_list_plans.py checks the plans).
--
-- 0001 gave one index per sort order ((created_at, id), (price, id), (name, id)), the GIN index
-- on the generated `search` tsvector, and (category_id, created_at, id) for a category listed
-- newest first. A category listed by price or by name had no index in its order: PostgreSQL read
-- the whole category and sorted it (the first category of a seeded 1M catalog has ~100k rows).
-- The list query reads each category of the tree through its own index range in the sort order
-- (server/db/catalog.py, build_list_query), so (category_id, <sort key>, id) serves every sort.
--
-- Not partial (WHERE is_active): admins list inactive products with the same queries, and
-- inactive rows are a small share, skipped as a filter. Descending sorts scan these backwards.
--
-- Plain CREATE INDEX, not CONCURRENTLY: the migration runner applies every file in a transaction
-- (server/db/migrations.py), where CONCURRENTLY is refused. The build holds a SHARE lock on
-- products, which blocks product writes (not reads) for its duration: about two seconds per
-- index on a 1M-row table here. A much larger live catalog would get these indexes by hand with
-- CREATE INDEX CONCURRENTLY first; this file then finds them (IF NOT EXISTS) and records itself.
CREATE INDEX IF NOT EXISTS products_category_price_idx ON products (category_id, price, id);
CREATE INDEX IF NOT EXISTS products_category_name_idx ON products (category_id, name, id);

