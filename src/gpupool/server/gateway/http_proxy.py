"""Forwarding one HTTP request to a notebook's server and streaming the answer back.

Contract: the path (raw, as received) and query string reach the upstream unchanged; the
request body and the response body stream through (nothing is buffered whole, so large
downloads and server-sent events flow); status, headers (minus hop-by-hop ones) and repeated
``Set-Cookie`` headers come back as sent. An upstream that can't be reached answers 502. If
the client goes away mid-response, the upstream response is closed. If the upstream fails
mid-response, the client connection is cut rather than ended cleanly, so a truncated
download is never mistaken for a whole one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from gpupool.server.gateway import pages
from gpupool.server.gateway.directory import Target
from gpupool.server.gateway.headers import downstream_headers

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=None, pool=10.0)
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


class ClientGone(Exception):
    """The client disconnected while its request body was being read."""


def new_client() -> httpx.AsyncClient:
    """The pooled upstream client: no proxies from the environment, no default headers
    (the client's own Accept-Encoding etc. pass through; none are invented), no redirects
    followed, a 5 s connect timeout and no read timeout (Jupyter long-polls)."""
    client = httpx.AsyncClient(trust_env=False, timeout=TIMEOUT, limits=LIMITS,
                               follow_redirects=False)
    for name in list(client.headers.keys()):
        del client.headers[name]
    return client


def upstream_url(scope: Scope, target: Target, scheme: str = "http") -> httpx.URL:
    """The URL of this request on ``target``: same raw path, same query string."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    full = raw_path + (b"?" + query if query else b"")
    return httpx.URL(scheme=scheme, host=target.host, port=target.port, raw_path=full)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
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
        content=_body(receive) if has_body else None)
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
        await _relay_body(response, receive, send)
    finally:
        await response.aclose()


async def _relay_body(response: httpx.Response, receive: Receive, send: Send) -> None:
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
