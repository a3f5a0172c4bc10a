"""The line records the layers share, each field declared once: a cart line as pricing reads it
(the carts repository and checkout build them), and the fields every shown line has (`Line`),
which the priced line pricing returns (the REST cart and gRPC PriceCart show it) and an order's
item as the contract shows it (the orders repository stores it with what a refund put back)
extend.

Money fields are integer minor units. These are plain ints here: the bounds of server/domain/
values.py apply where a value enters (a request), not to figures the store computed."""

from __future__ import annotations

import msgspec


# The per-line values are msgspec Structs: built once per cart line on every cart read, where a
# frozen dataclass's __init__ costs ten times as much.
class CartLine(msgspec.Struct, frozen=True):
    """One variant of a product and how many; promotions scope by product and category."""

    product_id: int
    sku: str
    name: str
    category_id: int | None
    unit_price: int
    quantity: int
    variant_id: int = 0
    options: dict[str, str] = {}


# The field order of these records is the order of their JSON bodies (a subclass's own fields
# come after its base's).
class Line(msgspec.Struct, frozen=True):
    """What a priced or ordered line shows: which variant, how many, at what unit price."""

    product_id: int
    variant_id: int
    sku: str  # the variant's sku
    name: str
    options: dict[str, str]
    quantity: int
    unit_price: int  # for an order: the variant's price when it was placed


class PricedLine(Line, frozen=True):
    """A cart line with its figures: subtotal, its share of the discount, and the total."""

    line_subtotal: int  # unit_price x quantity
    line_discount: int  # the line's share of the promotion's discount, rounded half-even
    line_total: int  # line_subtotal - line_discount, before tax


class OrderItem(Line, frozen=True):
    """A line of a placed order: what was bought, at the price it had then."""

    line_total: int  # after the line's share of the discount, before tax

    @classmethod
    def of(cls, line: OrderItem | PricedLine) -> OrderItem:
        """The item of a priced line, or the contract's fields of a record extending this."""
        return cls(
            line.product_id,
            line.variant_id,
            line.sku,
            line.name,
            line.options,
            line.quantity,
            line.unit_price,
            line.line_total,
        )
