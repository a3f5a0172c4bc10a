"""Product options and variants: the rules that keep a product's variants consistent with its
options, and the admin writes on variants.

- A product has up to 3 options (`size`, `colour`), each with 1..50 distinct values, and 1..100
  variants. A variant gives exactly one value of each option (`{"size": "M"}`), and no two
  variants of a product give the same combination. A product without options has one variant
  with `options: {}`: what every product was before variants existed.
- A variant's `price` overrides the product's; null follows the product's price.
- Deactivating a variant (DELETE) keeps it in old orders and carts; it just stops selling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import asyncpg
import msgspec

from server.context import AppContext
from server.db import catalog as catalog_repo
from server.db import variants as repo
from server.db.catalog import ProductOption
from server.db.variants import VariantRecord
from server.domain.errors import FieldError, NotFound, ValidationFailed
from server.domain.values import Money, Stock
from server.services import events
from server.services.catalog_cache import product_changed
from server.services.stock_alerts import alert_if_low

MAX_OPTIONS = 3
MAX_OPTION_VALUES = 50
MAX_VARIANTS = 100
_NO_NUL = "^[^\x00]*$"

OptionName = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=_NO_NUL)]
OptionValue = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=_NO_NUL)]
VariantSku = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL)]
Selection = Annotated[
    dict[OptionName, OptionValue],
    msgspec.Meta(
        max_length=MAX_OPTIONS,
        description='one value for each of the product\'s options, e.g. {"size": "M"}',
    ),
]


class OptionSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: OptionName
    values: Annotated[
        list[OptionValue],
        msgspec.Meta(
            min_length=1, max_length=MAX_OPTION_VALUES, extra_json_schema={"uniqueItems": True}
        ),
    ]


OptionSpecs = Annotated[list[OptionSpec], msgspec.Meta(max_length=MAX_OPTIONS)]


class VariantCreate(msgspec.Struct, forbid_unknown_fields=True):
    sku: VariantSku
    stock: Stock
    options: Selection = {}
    price: Money | None = None
    is_active: bool = True


class VariantUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; `price: null` makes the variant follow the product."""

    sku: VariantSku | msgspec.UnsetType = msgspec.UNSET
    options: Selection | msgspec.UnsetType = msgspec.UNSET
    price: Money | msgspec.UnsetType | None = msgspec.UNSET
    stock: Stock | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET


class VariantView(msgspec.Struct):
    """A variant as its admin writes return it; `price` is the price it sells for."""

    id: int
    product_id: int
    sku: str
    options: dict[str, str]
    price: int
    price_override: int | None
    stock: int
    is_active: bool


def variant_view(record: VariantRecord) -> VariantView:
    return VariantView(
        record.id,
        record.product_id,
        record.sku,
        record.options,
        record.price,
        record.own_price,
        record.stock,
        record.is_active,
    )


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[FieldError(field, message)])


def checked_options(specs: Sequence[OptionSpec]) -> list[ProductOption]:
    """Distinct option names, distinct values within each."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise _invalid("options", "option names must be distinct")
    for index, spec in enumerate(specs):
        if len(set(spec.values)) != len(spec.values):
            raise _invalid(f"options[{index}].values", "option values must be distinct")
    return [ProductOption(spec.name, list(spec.values)) for spec in specs]


def selection_problem(options: Sequence[ProductOption], selection: dict[str, str]) -> str | None:
    """Why `selection` is not one value of each of `options`; None when it is."""
    wanted = {option.name: option.values for option in options}
    missing = [name for name in wanted if name not in selection]
    unknown = [name for name in selection if name not in wanted]
    if unknown:
        return f"the product has no option {unknown[0]!r}"
    if missing:
        return f"a value for the option {missing[0]!r} is required"
    for name, value in selection.items():
        if value not in wanted[name]:
            return f"{value!r} is not a value of the option {name!r}"
    return None


def check_selection(
    options: Sequence[ProductOption], selection: dict[str, str], field: str = "options"
) -> None:
    problem = selection_problem(options, selection)
    if problem is not None:
        raise _invalid(field, problem)


def options_of(record: VariantRecord) -> list[ProductOption]:
    return [ProductOption(o["name"], o["values"]) for o in record.product_options]


# ---- choosing the variant of a cart or order line --------------------------------------------


@dataclass(frozen=True, slots=True)
class Choice:
    """What a client named for one line: a variant, or a product and maybe option values."""

    product_id: int | None = None
    variant_id: int | None = None
    options: dict[str, str] | None = None


def _pick(choice: Choice, found: list[VariantRecord], field: str) -> VariantRecord:
    """The variant `choice` names among `found` (the candidates fetched for it)."""
    not_sold = NotFound("no such product or variant (or it is not for sale)")
    if choice.variant_id is not None:
        record = next((r for r in found if r.id == choice.variant_id), None)
        if record is None:
            raise NotFound(f"no such variant: {choice.variant_id}")
        if choice.product_id is not None and record.product_id != choice.product_id:
            raise _invalid(f"{field}variant_id", "this variant is not one of the product's")
        if choice.options and choice.options != record.options:
            raise _invalid(f"{field}options", "these options are not the variant's")
        if not record.sellable:
            raise not_sold
        return record
    if choice.product_id is None:
        raise _invalid(f"{field}product_id", "product_id or variant_id is required")
    mine = [r for r in found if r.product_id == choice.product_id]
    if not mine or not mine[0].product_active:
        raise NotFound(f"no such product: {choice.product_id}")
    if choice.options:
        check_selection(options_of(mine[0]), choice.options, f"{field}options")
        record = next((r for r in mine if r.options == choice.options), None)
        if record is None:
            raise _invalid(f"{field}options", "no variant of this product has these options")
    elif len(mine) == 1 and not mine[0].options:
        record = mine[0]
    else:
        raise _invalid(
            f"{field}variant_id", "this product has several variants: give variant_id or options"
        )
    if not record.sellable:
        raise not_sold
    return record


async def choose_variants(
    conn: repo.Executor, choices: Sequence[Choice], *, field_prefix: str | None = None
) -> list[VariantRecord]:
    """The variant of each choice, in order (one query for all). NotFound for an unknown or
    withdrawn product or variant, ValidationFailed for a mismatch or an ambiguous product.
    Field names are `variant_id` etc., or `items[i].variant_id` with a `field_prefix`."""
    chosen = await choose_or_miss(conn, choices, field_prefix=field_prefix)
    for result in chosen:
        if isinstance(result, NotFound):
            raise result
    return [r for r in chosen if isinstance(r, VariantRecord)]


async def choose_or_miss(
    conn: repo.Executor, choices: Sequence[Choice], *, field_prefix: str | None = None
) -> list[VariantRecord | NotFound]:
    """As `choose_variants`, but an unknown or withdrawn line is its NotFound, in its place
    (checkout names every such line); mismatches still raise."""
    found = await repo.candidates(
        conn,
        [c.product_id for c in choices if c.product_id is not None and c.variant_id is None],
        [c.variant_id for c in choices if c.variant_id is not None],
    )
    results: list[VariantRecord | NotFound] = []
    for index, choice in enumerate(choices):
        field = "" if field_prefix is None else f"{field_prefix}[{index}]."
        try:
            results.append(_pick(choice, found, field))
        except NotFound as missing:
            results.append(missing)
    return results


async def _product_options(ctx: AppContext, product_id: int) -> list[ProductOption]:
    product = await catalog_repo.get_product(ctx.pool, product_id, include_inactive=True)
    if product is None:
        raise NotFound("no such product")
    return product.options


async def create_variant(ctx: AppContext, product_id: int, data: VariantCreate) -> VariantView:
    check_selection(await _product_options(ctx, product_id), data.options)
    async with events.collecting(ctx), ctx.pool.acquire() as conn, conn.transaction():
        count = len(await repo.product_variants(conn, product_id))
        if count >= MAX_VARIANTS:
            raise _invalid("options", f"a product has at most {MAX_VARIANTS} variants")
        record = await repo.insert_variant(conn, product_id, msgspec.structs.asdict(data))
        await _touched(conn, product_id)
    await _variant_changed(ctx, product_id)
    return variant_view(record)


async def _owned_variant(conn: repo.Executor, product_id: int, variant_id: int) -> VariantRecord:
    record = await repo.get_variant(conn, variant_id)
    if record is None or record.product_id != product_id:
        raise NotFound("no such variant of this product")
    return record


async def update_variant(
    ctx: AppContext, product_id: int, variant_id: int, data: VariantUpdate
) -> VariantView:
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    async with events.collecting(ctx), ctx.pool.acquire() as conn, conn.transaction():
        current = await _owned_variant(conn, product_id, variant_id)
        if "options" in changes:
            check_selection(options_of(current), changes["options"])
        record = await repo.update_variant(conn, variant_id, changes)
        if record is None:
            raise NotFound("no such variant of this product")
        mailed = await alert_if_low(conn, ctx.settings, record, current.stock)
        await _touched(conn, product_id)
    await _variant_changed(ctx, product_id)
    if mailed and ctx.jobs is not None:
        await ctx.jobs.deliver_outbox()
    return variant_view(record)


async def _touched(conn: asyncpg.Connection, product_id: int) -> None:
    """A variant changed: the product's updated_at moves, and it is announced."""
    await catalog_repo.touch_product(conn, product_id)
    product = await catalog_repo.get_product(conn, product_id, include_inactive=True)
    if product is not None:
        await events.announce_product(conn, product)


async def deactivate_variant(ctx: AppContext, product_id: int, variant_id: int) -> None:
    await update_variant(ctx, product_id, variant_id, VariantUpdate(is_active=False))


async def _variant_changed(ctx: AppContext, product_id: int) -> None:
    await product_changed(ctx, product_id)
