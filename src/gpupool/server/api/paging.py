"""How a paged listing says that more rows exist: ``Link: <...>; rel="next"`` (RFC 8288) with
the URL of the next page, and ``X-Next-Cursor`` with its cursor alone. Both are absent on the
last page. The body stays a JSON array of the rows."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Query, Request, Response

from gpupool.server.services.paging import MAX_CURSOR_CHARS, Page

T = TypeVar("T")
NEXT_CURSOR = "X-Next-Cursor"

Cursor = Annotated[str | None, Query(
    max_length=MAX_CURSOR_CHARS, pattern=r"^[A-Za-z0-9_-]+$",
    description=f"Continue after an earlier page: the {NEXT_CURSOR} header of that answer "
                "(same filters and order).",
)]

PAGED: dict[int | str, dict[str, Any]] = {200: {
    "description": "One page of rows. When more exist, the answer carries a `Link` header "
                   'with the next page\'s URL (`rel="next"`) and that page\'s cursor in '
                   f"`{NEXT_CURSOR}`; the last page has neither.",
    "headers": {
        "Link": {"description": 'The next page: `<URL>; rel="next"`',
                 "schema": {"type": "string"}},
        NEXT_CURSOR: {"description": "The `cursor` of the next page",
                      "schema": {"type": "string"}},
    },
}}


def send_page(page: Page[T], request: Request, response: Response) -> list[T]:
    """The page's rows, with the next page's ``Link`` and cursor headers set on ``response``
    when more exist (the request's own query string, its cursor replaced)."""
    if page.next_cursor is not None:
        link = str(request.url.include_query_params(cursor=page.next_cursor))
        response.headers["Link"] = f'<{link}>; rel="next"'
        response.headers[NEXT_CURSOR] = page.next_cursor
    return page.items
