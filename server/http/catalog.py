"""REST catalog: categories and products."""

from __future__ import annotations

import functools
from typing import ClassVar

import msgspec

from server.db.catalog import Category, Product
from server.domain.errors import NotFound
from server.domain.values import END, INT64_MAX
from server.http.base import ApiHandler
from server.openapi import Operation, Param, read_query
from server.services import catalog, variants
from server.services.catalog import (
    CategoryCreate,
    CategoryList,
    CategoryUpdate,
    ProductCreate,
    ProductPage,
    ProductQuery,
    ProductUpdate,
)
from server.services.variants import VariantCreate, VariantUpdate, VariantView

PRODUCT_CACHE_CONTROL = "public, max-age=60"
# Only admins can see an inactive product: no shared cache may keep it.
INACTIVE_CACHE_CONTROL = "private, no-cache"


def resource_id(text: str, what: str = "resource") -> int:
    """A path id (the route matched digits); beyond bigint it cannot exist."""
    if len(text) > 19 or int(text) > INT64_MAX:
        raise NotFound(f"no such {what}")
    return int(text)


def if_none_match(header: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match asks for."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    candidates = (tag.strip().removeprefix("W/") for tag in header.split(","))
    return etag in candidates


_NOT_CONTROL = "\\u0000-\\u001f\\u007f"
OPTION_PATTERN = (
    f"^[^:{_NOT_CONTROL}]*[^: {_NOT_CONTROL}][^:{_NOT_CONTROL}]*"
    f":[^{_NOT_CONTROL}]*[^ {_NOT_CONTROL}][^{_NOT_CONTROL}]*{END}"
)

LIST_PARAMS = (
    Param(
        "category",
        description="Category id or slug; matches the category and all its "
        "descendants. An unknown category matches nothing.",
        max_length=200,
    ),
    Param(
        "q",
        description="Full-text search over name and description (web-search syntax: "
        'words, "quoted phrases", -excluded, or).',
        max_length=200,
    ),
    Param(
        "min_price",
        int,
        "Inclusive lower bound, minor units.",
        minimum=0,
        maximum=INT64_MAX,
    ),
    Param(
        "max_price",
        int,
        "Inclusive upper bound, minor units.",
        minimum=0,
        maximum=INT64_MAX,
    ),
    Param("in_stock", bool, "Only products with an active variant in stock."),
    Param(
        "option",
        description="`name:value`, e.g. `size:M`; repeat for more options. Matches products "
        "with an active variant having all these values (and stock, with `in_stock`).",
        max_length=200,
        repeated=True,
        max_items=3,
        # A name and a value, each with a character that is not a space (nor, in the name, a
        # colon); no control characters.
        pattern=OPTION_PATTERN,
    ),
    Param(
        "sort",
        description="Sort order; `-` is descending. Ties break on id.",
        enum=catalog.SORTS,
        default=catalog.DEFAULT_SORT,
    ),
    Param(
        "limit",
        int,
        "Page size.",
        minimum=1,
        maximum=catalog.MAX_LIMIT,
        default=catalog.DEFAULT_LIMIT,
    ),
    Param(
        "cursor",
        description="`next_cursor` of the previous page (same filters and sort).",
        max_length=1000,
    ),
)


class CategoriesHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "anyone", "POST": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation("List all categories (a tree through parent_id)", response=CategoryList),
        "POST": Operation(
            "Create a category",
            request=CategoryCreate,
            response=Category,
            status=201,
            errors=(409,),
            description="The slug is derived from the name when absent (ASCII-folded, lowercase, "
            "hyphens). 409 for a duplicate slug; 422 for an unknown parent.",
        ),
    }

    async def get(self) -> None:
        self.send_json(msgspec.json.encode(await catalog.list_categories(self.ctx.pool)))

    async def post(self) -> None:
        data = self.parse_body(CategoryCreate)
        category = await catalog.create_category(self.ctx.pool, data)
        self.send_json(msgspec.json.encode(category), 201)


class CategoryHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"PATCH": "admin", "DELETE": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "PATCH": Operation(
            "Update a category",
            request=CategoryUpdate,
            response=Category,
            errors=(409,),
            description="422 when the new parent is unknown or would make a cycle. Renaming "
            "does not change the slug.",
        ),
        "DELETE": Operation(
            "Delete a category",
            status=204,
            description="Its children become roots; its products lose their category.",
        ),
    }

    async def patch(self, category_id: str) -> None:
        data = self.parse_body(CategoryUpdate)
        category = await catalog.update_category(
            self.ctx, resource_id(category_id, "category"), data
        )
        self.send_json(msgspec.json.encode(category))

    async def delete(self, category_id: str) -> None:
        await catalog.delete_category(self.ctx, resource_id(category_id, "category"))
        self.send_empty(204)


class ProductsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "anyone", "POST": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "List products",
            response=ProductPage,
            query=LIST_PARAMS,
            description="Keyset (cursor) pagination; no total count. Inactive products are "
            "listed for admins only. A page may hold fewer than `limit` items and still have a "
            "`next_cursor` (a product that stopped matching the filters since the page was "
            "cached is left out); the list ends when `next_cursor` is null.",
        ),
        "POST": Operation(
            "Create a product",
            request=ProductCreate,
            response=Product,
            status=201,
            errors=(409,),
            description="409 for a duplicate sku; 422 for an unknown category or a currency "
            "other than the store's.",
        ),
    }

    async def get(self) -> None:
        query = ProductQuery(**read_query(self, LIST_PARAMS))
        principal = self.principal
        if principal is None or not principal.is_admin:
            self.send_json(await catalog.public_product_page(self.ctx, query))  # cached
            return
        page = await catalog.list_products(self.ctx.pool, query, principal)
        self.send_json(msgspec.json.encode(page))

    async def post(self) -> None:
        data = self.parse_body(ProductCreate)
        product = await catalog.create_product(self.ctx, data)
        self.send_json(msgspec.json.encode(product), 201)


class ProductHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "anyone", "PATCH": "admin", "DELETE": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Get a product",
            response=Product,
            description="Inactive products are 404 except for admins. Send the ETag back in "
            "`If-None-Match` to get a 304.",
            also={304: "Not modified (the If-None-Match ETag still matches)"},
            headers={
                "ETag": "strong validator of this representation",
                "Cache-Control": "`public, max-age=60` with `Vary: Authorization` (inactive, or "
                "an admin's view: `private, no-cache`)",
            },
        ),
        "PATCH": Operation(
            "Update a product", request=ProductUpdate, response=Product, errors=(409,)
        ),
        "DELETE": Operation("Deactivate a product (soft delete: is_active=false)", status=204),
    }

    async def get(self, product_id: str) -> None:
        wanted = resource_id(product_id, "product")
        principal = self.principal
        if principal is None or not principal.is_admin:
            if principal is None:
                # Taken before the read: a write during it must retire what is read.
                self.offer_replay(
                    catalog.public_product_freshness(self.ctx, wanted),
                    # A replay is a view. Not a closure over the handler: the offer outlives
                    # this request, and must not keep its handler and request alive with it.
                    on_replay=functools.partial(catalog.record_view, self.ctx, wanted),
                )
            # Active products only, served from the cache as ready JSON.
            etag, body = await catalog.public_product(self.ctx, wanted)
            active = True
        else:
            product = await catalog.get_product(self.ctx.pool, wanted, principal)
            etag, active = catalog.etag(product), product.is_active
            body = msgspec.json.encode(product)
        catalog.record_view(self.ctx, wanted)
        self.set_header("ETag", etag)
        admin_view = principal is not None and principal.is_admin
        public = active and not admin_view  # an admin's view may show inactive variants
        self.set_header(
            "Cache-Control", PRODUCT_CACHE_CONTROL if public else INACTIVE_CACHE_CONTROL
        )
        if public:
            # A shared cache must not answer an admin (who gets their own view) with this copy.
            self.add_vary("Authorization")
        if if_none_match(self.request.headers.get("If-None-Match"), etag):
            self.set_status(304)
            self.finish()
            return
        self.send_json(body)

    async def patch(self, product_id: str) -> None:
        data = self.parse_body(ProductUpdate)
        product = await catalog.update_product(self.ctx, resource_id(product_id, "product"), data)
        self.send_json(msgspec.json.encode(product))

    async def delete(self, product_id: str) -> None:
        await catalog.delete_product(self.ctx, resource_id(product_id, "product"))
        self.send_empty(204)


class ProductVariantsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"POST": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Add a variant to a product",
            request=VariantCreate,
            response=VariantView,
            status=201,
            errors=(409,),
            description="`options` gives one value of each of the product's options (422 "
            "otherwise). `price` overrides the product's price (null: follow it). 409 for a "
            "duplicate sku or a combination the product already has; 422 beyond 100 variants.",
        ),
    }

    async def post(self, product_id: str) -> None:
        data = self.parse_body(VariantCreate)
        created = await variants.create_variant(self.ctx, resource_id(product_id, "product"), data)
        self.send_json(msgspec.json.encode(created), 201)


class ProductVariantHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"PATCH": "admin", "DELETE": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "PATCH": Operation(
            "Update a variant",
            request=VariantUpdate,
            response=VariantView,
            errors=(409,),
            description="Only the fields present change; `price: null` follows the product's "
            "price again. 404 unless the variant is one of this product's.",
        ),
        "DELETE": Operation(
            "Deactivate a variant (soft delete: is_active=false)",
            status=204,
            description="It stops selling; orders and carts keep referring to it.",
        ),
    }

    async def patch(self, product_id: str, variant_id: str) -> None:
        data = self.parse_body(VariantUpdate)
        updated = await variants.update_variant(
            self.ctx, resource_id(product_id, "product"), resource_id(variant_id, "variant"), data
        )
        self.send_json(msgspec.json.encode(updated))

    async def delete(self, product_id: str, variant_id: str) -> None:
        await variants.deactivate_variant(
            self.ctx, resource_id(product_id, "product"), resource_id(variant_id, "variant")
        )
        self.send_empty(204)


routes = [
    (r"/api/v1/categories/?", CategoriesHandler),
    (r"/api/v1/categories/(?P<category_id>[0-9]+)/?", CategoryHandler),
    (r"/api/v1/products/?", ProductsHandler),
    (r"/api/v1/products/(?P<product_id>[0-9]+)/?", ProductHandler),
    (r"/api/v1/products/(?P<product_id>[0-9]+)/variants/?", ProductVariantsHandler),
    (
        r"/api/v1/products/(?P<product_id>[0-9]+)/variants/(?P<variant_id>[0-9]+)/?",
        ProductVariantHandler,
    ),
]
