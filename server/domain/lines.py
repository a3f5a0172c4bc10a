"""The line of a cart as pricing reads it (the carts repository builds them, the pricing service
prices them)."""

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
