"""The value types the layers share, defined once: money in integer minor units, the amounts
payments move, ids, stock counts and line quantities, with the bounds every edge validates
against (they reach the OpenAPI document as JSON Schema `minimum`/`maximum`)."""

from __future__ import annotations

from typing import Annotated

import msgspec

INT32_MAX = 2**31 - 1  # PostgreSQL integer (stock counts, usage limits)
INT64_MAX = 2**63 - 1  # PostgreSQL bigint (ids)
MAX_PRICE = 10**12  # minor units; keeps price x 999 x many lines far from int64 overflow
MAX_QUANTITY = 999  # units of one variant on one line
MAX_CHARGE = 10**15  # minor units; an order's total (many lines, many units) may pass MAX_PRICE

# Ends a whole-string pattern. Python's `$` (msgspec validates with `re.search`) also matches
# before a final newline, so "mugs\n" would pass `^[a-z]+$`; the lookahead refuses it and means
# nothing more to an ECMA-262 reader of the published JSON Schema, where `$` is the end already.
END = r"(?!\n)$"

# A price or an amount in the store currency's minor units (cents); never a float.
Money = Annotated[int, msgspec.Meta(ge=0, le=MAX_PRICE, description="minor units")]
# Money a payment moves (a capture, a refund): never nothing.
Charge = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHARGE, description="minor units")]
Id = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
Stock = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
