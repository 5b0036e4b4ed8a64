"""Reading paged listings: each page is one Call; the server says in ``X-Next-Cursor`` when
more exist. Shared by the sync and async clients (each passes its own ``do``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

from gpupool.sdk._wire import Call, Page

M = TypeVar("M", bound=BaseModel)
PAGE_MAX = 1000
"""Rows asked per request (the server allows up to 10,000)."""


def page_call(path: str, model: type[M], params: Mapping[str, str | list[str]],
              cursor: str | None, size: int) -> Call[Page[M]]:
    """The request of one page of ``size`` rows after ``cursor`` (the first when None)."""
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]

    def parse(data: Any) -> Page[M]:
        return Page(adapter.validate_python(data["items"]), data["next"])

    query: dict[str, Any] = dict(params)
    query["limit"] = str(size)
    if cursor is not None:
        query["cursor"] = cursor
    return Call("GET", path, parse, params=query, paged=True)


def _size(limit: int | None, have: int) -> int:
    return PAGE_MAX if limit is None else min(PAGE_MAX, limit - have)


def collect(do: Callable[[Call[Any]], Any], path: str, model: type[M],
            params: Mapping[str, str | list[str]], limit: int | None) -> list[M]:
    """Every row (``limit`` None) or the first ``limit`` rows, following the pages."""
    items: list[M] = []
    cursor: str | None = None
    while limit is None or len(items) < limit:
        page: Page[M] = do(page_call(path, model, params, cursor, _size(limit, len(items))))
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return items


async def acollect(do: Callable[[Call[Any]], Awaitable[Any]], path: str, model: type[M],
                   params: Mapping[str, str | list[str]], limit: int | None) -> list[M]:
    """As ``collect``, for the async client."""
    items: list[M] = []
    cursor: str | None = None
    while limit is None or len(items) < limit:
        page: Page[M] = await do(page_call(path, model, params, cursor,
                                           _size(limit, len(items))))
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return items
