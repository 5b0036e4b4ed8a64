"""Forwarding one HTTP request to a notebook's server and streaming the answer back.

Contract: the path (raw, as received) and query string reach the upstream unchanged; the
request body and the response body stream through (nothing is buffered whole, so large
downloads and server-sent events flow); status, headers (minus hop-by-hop ones) and repeated
``Set-Cookie`` headers come back as sent. An upstream that can't be reached answers 502. If
the client goes away mid-response, the upstream response is closed. If the upstream fails
mid-response, the client connection is cut rather than ended cleanly, so a truncated
download is never mistaken for a whole one.

``new_client``, ``request_body`` and ``relay_body`` are shared with the services' proxy
(``svc_proxy``), which adds balancing and retries around the same relay.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import AsyncIterator
from http.cookiejar import Cookie, CookieJar
from typing import Any, Protocol

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from gpupool.server.gateway import pages
from gpupool.server.gateway.directory import Target
from gpupool.server.gateway.headers import downstream_headers

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=None, pool=10.0)
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


def _fail_sniffio_imports_fast() -> None:
    """httpcore tries ``import sniffio`` several times per request; when it is not
    installed, each try searches all of ``sys.path`` again (~0.1 ms, a good part of the
    gateway's added latency). A None entry in ``sys.modules`` makes the same ImportError
    instant; nothing changes where sniffio is installed."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


_fail_sniffio_imports_fast()


class ClientGone(Exception):
    """The client disconnected while its request body was being read."""


class _NoCookies(CookieJar):
    """A cookie jar that keeps nothing: the pooled client is shared by every caller, so a
    ``Set-Cookie`` one upstream answer carries must never ride along on someone else's
    request (httpx's default jar would store it and send it on)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Cookie) -> None:
        return None


def new_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """A pooled upstream client: no proxies from the environment, no default headers
    (the client's own Accept-Encoding etc. pass through; none are invented), no cookie jar,
    no redirects followed, a 5 s connect timeout and no read timeout (Jupyter long-polls).
    ``transport``: e.g. ``httpx.AsyncHTTPTransport(uds=...)`` (then it brings its limits)."""
    client = httpx.AsyncClient(trust_env=False, timeout=TIMEOUT, limits=LIMITS,
                               follow_redirects=False, cookies=_NoCookies(),
                               transport=transport)
    for name in list(client.headers.keys()):
        del client.headers[name]
    return client


def upstream_url(scope: Scope, target: Target, scheme: str = "http") -> httpx.URL:
    """The URL of this request on ``target``: same raw path, same query string."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    full = raw_path + (b"?" + query if query else b"")
    return httpx.URL(scheme=scheme, host=target.host, port=target.port, raw_path=full)


async def request_body(receive: Receive) -> AsyncIterator[bytes]:
    """The client's request body as it arrives; raises ``ClientGone`` if the client leaves."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def forward(client: httpx.AsyncClient, scope: Scope, receive: Receive, send: Send,
                  target: Target, headers: list[tuple[str, str]],
                  dropped_cookies: tuple[str, ...] = ()) -> None:
    """Forward the request in ``scope`` to ``target`` with ``headers`` (already rewritten
    for the upstream) and relay the response, without the cookies ``dropped_cookies`` names
    (the mount's). See the module docstring."""
    names = {name.lower() for name, _ in headers}
    client_headers = {k.decode("latin-1").lower() for k, _ in scope["headers"]}
    has_body = "content-length" in names or "transfer-encoding" in client_headers
    request = client.build_request(
        scope["method"], upstream_url(scope, target), headers=headers,
        content=request_body(receive) if has_body else None)
    try:
        response = await client.send(request, stream=True)
    except ClientGone:
        return
    except httpx.TransportError as exc:
        await pages.json_error(
            502, f"notebook {target.id} is not answering at {target.host}:{target.port} "
            f"({type(exc).__name__}); it may be restarting: retry in a moment",
        )(scope, receive, send)
        return
    try:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": downstream_headers(response.headers.raw, target,
                                                          dropped_cookies)})
        await relay_body(response, receive, send)
    finally:
        await response.aclose()


class RawBody(Protocol):
    """An upstream answer whose body can be read as raw bytes (``httpx.Response``, the
    service proxy's ``UpstreamResponse``)."""

    def aiter_raw(self) -> AsyncIterator[bytes]: ...


async def relay_body(response: RawBody, receive: Receive, send: Send) -> None:
    """Stream ``response``'s body to the client (response start already sent), chunk by
    chunk as it arrives; stop (and return) when the client disconnects; cut the client off
    (no final body message) when the upstream fails mid-body."""
    async with anyio.create_task_group() as tasks:

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch_disconnect)
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.TransportError as exc:
            # Returning without the final body message makes the server cut the connection.
            log.warning("upstream failed mid-response (%s); cutting the client off", exc)
            tasks.cancel_scope.cancel()
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        tasks.cancel_scope.cancel()
