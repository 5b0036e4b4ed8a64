"""Reading paged listings: each page is one Call; the server says in ``X-Next-Cursor`` when
more exist. Shared by the sync and async clients (each passes its own ``do``) and by the raw
client (rows as the server's JSON objects; then neither pydantic nor the schemas are
imported)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from gpupool.sdk._http import Call, Page

if TYPE_CHECKING:
    from pydantic import BaseModel

R = TypeVar("R")
M = TypeVar("M", bound="BaseModel")
PAGE_MAX = 1000
"""Rows asked per request (the server allows up to 10,000)."""
Items = Callable[[Any], list[R]]
"""Reads the JSON array of one page into its rows."""


def page_call(path: str, items: Items[R], params: Mapping[str, str | list[str]],
              cursor: str | None, size: int) -> Call[Page[R]]:
    """The request of one page of ``size`` rows after ``cursor`` (the first when None)."""

    def parse(data: Any) -> Page[R]:
        return Page(items(data["items"]), data["next"])

    query: dict[str, Any] = dict(params)
    query["limit"] = str(size)
    if cursor is not None:
        query["cursor"] = cursor
    return Call("GET", path, parse, params=query, paged=True)


def models(model: type[M]) -> Items[M]:
    """Rows validated as ``model`` (a ValidationError is the caller's ApiError)."""
    from pydantic import TypeAdapter

    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]

    def parse(data: Any) -> list[M]:
        result: list[M] = adapter.validate_python(data)
        return result

    return parse


def json_objects(data: Any) -> list[dict[str, Any]]:
    """Rows as the server sent them; ValueError (the caller's ApiError) unless a JSON array
    of objects."""
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError("expected a JSON array of objects")
    return data


def _size(limit: int | None, have: int) -> int:
    return PAGE_MAX if limit is None else min(PAGE_MAX, limit - have)


def collect_items(do: Callable[[Call[Any]], Any], path: str, items: Items[R],
                  params: Mapping[str, str | list[str]], limit: int | None) -> list[R]:
    """Every row (``limit`` None) or the first ``limit`` rows, following the pages."""
    rows: list[R] = []
    cursor: str | None = None
    while limit is None or len(rows) < limit:
        page: Page[R] = do(page_call(path, items, params, cursor, _size(limit, len(rows))))
        rows += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return rows


def collect(do: Callable[[Call[Any]], Any], path: str, model: type[M],
            params: Mapping[str, str | list[str]], limit: int | None) -> list[M]:
    """As ``collect_items``, each row validated as ``model``."""
    return collect_items(do, path, models(model), params, limit)


async def acollect(do: Callable[[Call[Any]], Awaitable[Any]], path: str, model: type[M],
                   params: Mapping[str, str | list[str]], limit: int | None) -> list[M]:
    """As ``collect``, for the async client."""
    items = models(model)
    rows: list[M] = []
    cursor: str | None = None
    while limit is None or len(rows) < limit:
        page: Page[M] = await do(page_call(path, items, params, cursor,
                                           _size(limit, len(rows))))
        rows += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return rows
