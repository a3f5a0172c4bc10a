"""The line records are declared once (server/domain/lines.py) and every layer carries all of
their fields: the REST cart and order schemas, the stored order item and the gRPC messages."""

from __future__ import annotations

import msgspec
import pytest

from server.app import feature_routes
from server.db.orders import OrderItemRecord
from server.domain.lines import OrderItem, PricedLine
from server.openapi import build_document
from server.rpc.pb.storefront.v1 import cart_pb2, orders_pb2
from server.services.cart import CartLineView


def _fields(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return struct.__struct_fields__


def test_the_stored_item_is_the_contract_item_and_what_a_refund_gave_back() -> None:
    assert _fields(OrderItemRecord) == (*_fields(OrderItem), "restocked")
    record = OrderItemRecord(1, 2, "SKU-1", "Mug", {"colour": "red"}, 3, 500, 1400, restocked=1)
    item = OrderItem.of(record)
    assert type(item) is OrderItem
    assert msgspec.structs.astuple(item) == msgspec.structs.astuple(record)[:-1]


def test_an_order_item_of_a_priced_line_keeps_its_figures() -> None:
    line = PricedLine(1, 2, "SKU-1", "Mug", {"colour": "red"}, 3, 500, 1500, 100, 1400)
    assert OrderItem.of(line) == OrderItem(1, 2, "SKU-1", "Mug", {"colour": "red"}, 3, 500, 1400)


def test_the_cart_view_line_is_the_priced_line() -> None:
    assert _fields(CartLineView) == _fields(PricedLine)
    assert issubclass(CartLineView, PricedLine)


@pytest.mark.parametrize(
    ("component", "struct"), [("CartLineView", PricedLine), ("OrderItem", OrderItem)]
)
def test_the_rest_schema_lists_the_line_fields_in_order(
    component: str, struct: type[msgspec.Struct]
) -> None:
    document = build_document(tuple(feature_routes()))
    schema = document["components"]["schemas"][component]
    assert tuple(schema["properties"]) == _fields(struct)
    assert set(schema["required"]) == set(_fields(struct))


@pytest.mark.parametrize(
    ("message", "struct"),
    [(cart_pb2.PricedLine, PricedLine), (orders_pb2.OrderItem, OrderItem)],
)
def test_the_grpc_message_carries_every_line_field(message: type, struct: type) -> None:
    assert set(message.DESCRIPTOR.fields_by_name) == set(_fields(struct))
