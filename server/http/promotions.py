"""REST promotions administration."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from server.db.promotions import Promotion
from server.http.base import ApiHandler
from server.http.catalog import resource_id
from server.openapi import Operation, Param, read_query
from server.services import promotions
from server.services.promotions import PromotionCreate, PromotionPage, PromotionUpdate

LIST_PARAMS = (
    Param(
        "limit",
        int,
        "Page size.",
        minimum=1,
        maximum=promotions.MAX_LIMIT,
        default=promotions.DEFAULT_LIMIT,
    ),
    Param("cursor", description="`next_cursor` of the previous page.", max_length=100),
)
_RULES = (
    "`percent`: `value` is whole percent 1..100 off each line in scope (rounded half-even per "
    "line); `fixed`: `value` minor units off the in-scope subtotal, spread in proportion "
    "(remainder to the largest line); `buy_x_get_y`: for every `buy_quantity` units of a line "
    "in scope, `get_quantity` more are free (`value` unused, 0). Scope: `product_ids` and "
    "`category_ids` (a line is in scope if either matches; both empty: every line). "
    "`ends_at` must be after `starts_at`. Codes are unique ignoring case (409)."
)


class PromotionsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "admin", "POST": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "List promotions (oldest first)", response=PromotionPage, query=LIST_PARAMS
        ),
        "POST": Operation(
            "Create a promotion",
            request=PromotionCreate,
            response=Promotion,
            status=201,
            errors=(409,),
            description=_RULES,
        ),
    }

    async def get(self) -> None:
        values = read_query(self, LIST_PARAMS)
        page = await promotions.list_promotions(self.ctx.pool, values["limit"], values["cursor"])
        self.send_json(msgspec.json.encode(page))

    async def post(self) -> None:
        data = self.parse_body(PromotionCreate)
        promotion = await promotions.create_promotion(self.ctx.pool, data)
        self.send_json(msgspec.json.encode(promotion), 201)


class PromotionHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"PATCH": "admin", "DELETE": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "PATCH": Operation(
            "Update a promotion",
            request=PromotionUpdate,
            response=Promotion,
            errors=(409,),
            description="Validated as a whole after merging. " + _RULES,
        ),
        "DELETE": Operation(
            "Delete a promotion",
            status=204,
            description=(
                "Carts holding the code keep it attached but unpriced; orders keep their copy."
            ),
        ),
    }

    async def patch(self, promotion_id: str) -> None:
        data = self.parse_body(PromotionUpdate)
        promotion = await promotions.update_promotion(
            self.ctx.pool, resource_id(promotion_id, "promotion"), data
        )
        self.send_json(msgspec.json.encode(promotion))

    async def delete(self, promotion_id: str) -> None:
        await promotions.delete_promotion(self.ctx.pool, resource_id(promotion_id, "promotion"))
        self.send_empty(204)


routes = [
    (r"/api/v1/promotions/?", PromotionsHandler),
    (r"/api/v1/promotions/(?P<promotion_id>[0-9]+)/?", PromotionHandler),
]
