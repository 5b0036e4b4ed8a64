"""Keyset paging of listings: a page of rows and an opaque cursor for the rest.

A cursor is the sort key of the last row a page returned, tagged with the listing and order
it belongs to, in URL-safe base64 of JSON. The next page is the rows strictly after that key
in the same order, so rows that arrive or leave between two requests never make a page repeat
or skip a row that stayed. A cursor carries no secret and grants nothing: the next request is
filtered by its caller's rights like the first.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gpupool.server.services.errors import Invalid

T = TypeVar("T")
R = TypeVar("R")
Key = tuple[float, ...]
MAX_CURSOR_CHARS = 400


@dataclass(frozen=True)
class Page(Generic[T]):
    """``items`` in the listing's order; ``next_cursor`` is None when nothing follows."""

    items: list[T]
    next_cursor: str | None


def encode(kind: str, key: Sequence[float]) -> str:
    """The cursor of ``kind`` (e.g. ``"jobs:queue"``) positioned after ``key``."""
    raw = json.dumps([kind, *key], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str, kind: str, arity: int) -> Key:
    """The key a cursor of ``kind`` holds; Invalid (422) naming ``cursor`` when it was not
    made by this server for this listing and order (e.g. an order changed between pages)."""
    problem = f"cursor: not a cursor of this listing ({kind}); start again without one"
    if len(cursor) > MAX_CURSOR_CHARS:
        raise Invalid(problem)
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Invalid(problem) from None
    if not isinstance(data, list) or len(data) != arity + 1 or data[0] != kind:
        raise Invalid(problem)
    key = data[1:]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               for v in key):
        raise Invalid(problem)
    return tuple(key)


def page_of(rows: Sequence[R], limit: int, kind: str, key_of: Callable[[R], Key],
            view: Callable[[R], T]) -> Page[T]:
    """The page of ``rows`` fetched with ``limit + 1`` (the extra row only says that more
    exist): at most ``limit`` views, and a cursor after the last one when more exist."""
    more = len(rows) > limit
    kept = rows[:limit]
    cursor = encode(kind, key_of(kept[-1])) if more and kept else None
    return Page([view(r) for r in kept], cursor)
