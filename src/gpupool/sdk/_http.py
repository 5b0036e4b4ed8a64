"""The model-free half of the wire: one request (``Call``), sending it, and turning a failed
answer into a one-line ApiError. Imports neither ``gpupool.schemas`` nor pydantic nor (until a
request goes through it) httpx, so that a client that only reads JSON (``gpupool.sdk.raw``)
starts without them; ``_wire`` adds the requests of each endpoint and re-exports all of this.
No I/O here."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gpupool.sdk.config import CA_FILE_ENV
from gpupool.sdk.errors import ApiError

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
API = "/api/v1"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how to read its 2xx answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    paged: bool = False
    """A page of a listing: ``parse`` gets ``{"items": rows, "next": cursor or None}``."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` is None on the last."""

    items: list[T]
    next_cursor: str | None


def request(client: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
    """The httpx request of ``call`` (a body is sent as JSON only when there is one)."""
    return client.build_request(call.method, call.path, params=call.params or None,
                                json=call.body, headers=call.headers or None)


def read(call: Call[T], response: httpx.Response) -> T:
    """The parsed 2xx answer; ApiError for any other status or an answer that does not fit
    the contract (a client and server of different versions)."""
    if not response.is_success:
        raise ApiError(response.status_code, error_message(response))
    return parse(call, response.status_code, response.json,
                 response.headers.get(NEXT_CURSOR))


NEXT_CURSOR = "X-Next-Cursor"


def parse(call: Call[T], status: int, load: Callable[[], Any], next_cursor: str | None) -> T:
    """``call``'s reading of a 2xx answer whose JSON ``load`` gives (and, for a page, whose
    ``X-Next-Cursor`` header is ``next_cursor``); ApiError when it does not fit."""
    try:
        data = load()
        if call.paged:
            data = {"items": data, "next": next_cursor}
        return call.parse(data)
    except ValueError as exc:  # bad JSON, or pydantic's ValidationError (a ValueError)
        raise unexpected(call.method, call.path, status, _problem(exc)) from None


def timed_out(url: str, timeout: float) -> ApiError:
    """ApiError(0, ...) for a server that did not answer within ``timeout`` seconds."""
    return ApiError(0, f"the gpupool server at {url} did not answer within {timeout:g} s")


def unexpected(method: str, path: str, status: int, problem: str) -> ApiError:
    """The ApiError of a 2xx answer to ``method path`` that does not fit the contract."""
    return ApiError(
        status,
        f"unexpected answer from the server to {method} {path}: {problem} "
        "(are the client and the server the same gpupool version?)",
    )


def error_message(response: httpx.Response) -> str:
    """One line from an error answer: ``detail`` as a string, FastAPI's list of validation
    problems as ``body.gpus: <msg>; ...``, else the status and the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail.strip():
        return _first_line(detail)
    if isinstance(detail, list) and detail:
        problems = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()))
                msg = str(item.get("msg", "invalid"))
                problems.append(f"{loc}: {msg}" if loc else msg)
            else:
                problems.append(str(item))
        return _first_line("; ".join(problems))
    text = _first_line(response.text)[:200]
    reason = response.reason_phrase or "error"
    return f"HTTP {response.status_code} {reason}" + (f": {text}" if text else "")


def transport_error(url: str, source: str, exc: httpx.TransportError, timeout: float) -> ApiError:
    """ApiError(0, ...) for a request that got no answer, with a hint where one helps."""
    import ssl

    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return timed_out(url, timeout)
    bad_cert = _cause(exc, ssl.SSLCertVerificationError)
    if bad_cert is not None:
        why = bad_cert.verify_message or _first_line(str(bad_cert))
        return ApiError(
            0,
            f"cannot verify the TLS certificate of the gpupool server at {url}: {why}; if it "
            f"uses a self-signed or private certificate, set {CA_FILE_ENV} to its CA file",
        )
    if _cause(exc, ssl.SSLError) is not None:  # e.g. "[SSL: X] wrong version number (_ssl.c:1)"
        reason = re.sub(r"\[SSL: \w+\] | \(_ssl\.c:\d+\)", "", _first_line(str(exc)))
        return ApiError(0, f"TLS with the gpupool server at {url} failed: {reason} (does it "
                        "serve HTTPS? a server without --tls-cert needs an http:// URL)")
    reason = _first_line(str(exc)) or type(exc).__name__
    hint = ""
    if source.endswith("server.json"):
        hint = " (is `gpupool up` still running on this machine?)"
    elif url.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
        hint = " (a server started with --tls-cert needs an https:// URL)"
    return ApiError(0, f"cannot reach the gpupool server at {url}: {reason}{hint}")


def _cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of ``kind`` in the chain of causes of ``exc`` (``exc`` included)."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, kind):
            return found
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else ""


def _problem(exc: ValueError) -> str:
    # pydantic's ValidationError can only have been raised once pydantic_core is imported.
    core = sys.modules.get("pydantic_core")
    if core is not None and isinstance(exc, core.ValidationError) and exc.errors():
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc}: {first['msg']}" if loc else str(first["msg"])
    return _first_line(str(exc))
