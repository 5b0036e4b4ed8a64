"""Hostile input at the request boundary, and answers that always encode.

``refuse_hostile_input`` (an app-wide dependency, run before authentication and before any
handler) refuses with 422, naming the field, every request whose query, path or JSON body
holds text that cannot be stored (NUL, lone surrogates) or a NaN/Infinity number: nothing is
written. ``SafeRoute`` makes answers encode even when a stored row holds such text (written
by an older version): writes always encode surrogate-safely; reads keep FastAPI's fast
encoder and fall back to the safe one only when it fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi import routing as fastapi_routing
from fastapi.datastructures import DefaultPlaceholder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic_core import PydanticSerializationError
from starlette.exceptions import HTTPException  # FastAPI raises Starlette's own

from gpupool.schemas.values import MAX_PROBLEMS, find_problems, segment, text_problem

_READS = {"GET", "HEAD"}
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"


def _json_body_expected(request: Request) -> bool:
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return False
    content_type = request.headers.get("content-type", "")
    return not content_type or "json" in content_type.split(";")[0].lower()


async def refuse_hostile_input(request: Request) -> None:
    """Raise RequestValidationError (422) naming each query/path parameter or body field that
    holds unstorable text or a non-finite number."""
    errors: list[dict[str, Any]] = []
    for where, items in (("query", request.query_params.multi_items()),
                         ("path", list(request.path_params.items()))):
        for name, value in items:
            problem = text_problem(name) or (
                text_problem(value) if isinstance(value, str) else None)
            if problem:
                errors.append({"loc": (where, segment(name)), "msg": problem,
                               "type": "unstorable_text"})
    if _json_body_expected(request) and await request.body():
        try:
            body = await request.json()  # FastAPI parsed it already: Starlette caches it
        except ValueError:  # FastAPI answered the parse error before this dependency runs
            body = None
        for path, problem in find_problems(body):
            errors.append({"loc": ("body", *path), "msg": problem, "type": "hostile_value"})
            if len(errors) >= MAX_PROBLEMS:
                break
    if errors:
        raise RequestValidationError(errors[:MAX_PROBLEMS])


def surrogate_safe(text: str) -> bytes:
    """``text`` as UTF-8, each lone surrogate replaced by U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        utf16 = text.encode("utf-16-le", "surrogatepass")
        return utf16.decode("utf-16-le", "replace").encode("utf-8")


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: lone surrogates become U+FFFD, NaN/Infinity ``null``."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False)
        except ValueError:  # rare: a non-finite number from outside pydantic's serializer
            text = json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":"))
        return surrogate_safe(text)


def _finite(data: Any) -> Any:
    if isinstance(data, float) and (data != data or data in (float("inf"), float("-inf"))):
        return None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(item) for item in data]
    return data


class SafeRoute(APIRoute):
    """An APIRoute whose answer always encodes (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # Included in a router, FastAPI builds the handler from a per-inclusion copy of the
        # route's settings (a private context variable); swap the response class there.
        var = getattr(fastapi_routing, "_effective_route_context_var", None)
        context: Any = var.get() if var is not None else None
        target: Any = context if getattr(context, "original_route", None) is self else self
        default = target.response_class
        if not isinstance(default, DefaultPlaceholder):
            return super().get_route_handler()
        target.response_class = SafeJSONResponse
        try:
            safe = _body_errors_are_422(super().get_route_handler())
        finally:
            target.response_class = default
        if not self.methods or not self.methods <= _READS:
            return safe  # one object per write: the safe encoder costs nothing that matters
        fast = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await fast(request)
            except PydanticSerializationError:  # a stored row holds text UTF-8 can't encode
                return await safe(request)

        return handler


def _body_errors_are_422(
    handler: Callable[[Request], Coroutine[Any, Any, Response]],
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """``handler``, answering a JSON body that cannot even be decoded (not UTF-8: FastAPI's
    bare 400 "There was an error parsing the body") with the 422 that malformed JSON gets,
    naming the body: every invalid input is one documented 422."""

    async def checked(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPException as exc:
            if exc.status_code != 400 or exc.detail != _FASTAPI_PARSE_ERROR:
                raise
            cause = exc.__cause__
            why = ("not valid UTF-8" if isinstance(cause, UnicodeDecodeError)
                   else "cannot be parsed as JSON")
            raise RequestValidationError([{"loc": ("body",), "msg": why,
                                           "type": "json_invalid"}]) from None

    return checked
