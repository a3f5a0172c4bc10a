"""Building the column lists of INSERT and UPDATE statements from validated field names.

The names come from msgspec structs that refuse unknown fields, never from the client's text;
the values always travel as `$n` parameters.
"""

from __future__ import annotations

from collections.abc import Iterable


def insert_columns(names: Iterable[str]) -> str:
    """`(a, b) VALUES ($1, $2)` for an INSERT whose parameters are the values in order."""
    columns = list(names)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f"({', '.join(columns)}) VALUES ({placeholders})"


def assignments(names: Iterable[str], *, first: int = 2, extra: Iterable[str] = ()) -> str:
    """`a = $2, b = $3` for an UPDATE whose `$1` is the row id; `extra` appends fixed ones."""
    pairs = [f"{name} = ${i}" for i, name in enumerate(names, start=first)]
    return ", ".join([*pairs, *extra])
