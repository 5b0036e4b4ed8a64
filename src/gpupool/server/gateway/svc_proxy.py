"""Forwarding one HTTP request to a service's replicas over their Unix sockets, with
retries, and streaming the answer back.

Contracts:

- Upstream: ``Replica.uds`` through one pool of kept-alive connections per socket path
  (``UdsClients``, of ``uds_http.UdsPool``: a small HTTP/1.1 client, faster under
  concurrency than httpx's transport; no cookie jar, redirects or auth handling, which a
  proxy must not have); a pool whose socket has not been listed by the directory for
  ``IDLE_S`` seconds and that has nothing in flight is closed.
- Headers (``request_headers``): the client's own, minus hop-by-hop ones (and those its
  ``Connection`` names), minus gpupool's cookies, minus any forwarding headers it wrote,
  minus ``Authorization`` unless the service is public; plus ``X-Forwarded-For``,
  ``-Proto``, ``-Host`` (the client's Host, which itself passes unchanged) and
  ``X-Forwarded-Prefix: /svc/<name>``.
- Path (``upstream_path``): the replica gets the raw path (percent-encoding untouched)
  without the ``/svc/<name>`` prefix, which ``X-Forwarded-Prefix`` names, as proxies that
  strip a prefix do: ``/svc/llm/v1/models?x=1`` reaches the service as ``/v1/models?x=1``,
  so an inference server needs no knowledge of the gateway's paths. The query passes as
  received.
- Bodies: ``Content-Length`` ≤ ``MAX_BUFFERED`` (1 MiB) is read whole first, so the request
  may be retried; larger or chunked bodies stream, and are retried only while not one byte
  of them was taken.
- Attempts (``forward``): at most ``MAX_ATTEMPTS``, each on a replica not tried yet where
  there is one (``Balancer.pick``). Retried: a failed connect (any method); a 502 carrying
  ``x-gpupool-unreached: 1`` (any method); a transport error before the response headers
  for GET/HEAD/OPTIONS (for a response of at most ``SMALL`` bytes by its Content-Length,
  read whole before answering: also one that fails mid-body). A replica that failed is
  ranked last for 2 s. Once response headers went to the client nothing is retried; other
  bodies (chunked, server-sent events, large ones) stream through ``relay_body``
  (unbuffered; the client cut off if the replica dies mid-body). All attempts failed →
  502 JSON naming the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
from starlette.types import Message, Receive, Scope, Send

from gpupool.server.gateway import pages
from gpupool.server.gateway.balancer import Balancer
from gpupool.server.gateway.headers import GPUPOOL_COOKIE_PREFIX, HOP_BY_HOP, strip_gpupool_cookies
from gpupool.server.gateway.http_proxy import ClientGone, relay_body
from gpupool.server.gateway.service_directory import UNREACHED_HEADER, ServiceTarget
from gpupool.server.gateway.uds_http import UdsPool, UpstreamResponse

MAX_BUFFERED = 1 << 20
SMALL = 64 * 1024
MAX_ATTEMPTS = 3
IDLE_S = 60.0
SWEEP_EVERY_S = 10.0
RETRY_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)

_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
_FORWARDING = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-proto",
                         b"x-forwarded-host", b"x-forwarded-port", b"x-forwarded-prefix",
                         b"x-real-ip"})
_SPECIAL = _HOP | _FORWARDING | {b"cookie", b"authorization", b"host"}
_WS_DROPPED = frozenset({b"host", b"user-agent", b"content-length"})
_UNREACHED = UNREACHED_HEADER.encode()
_GPUPOOL_SET_COOKIE = GPUPOOL_COOKIE_PREFIX.encode()


@dataclass
class _Pooled:
    transport: UdsPool
    seen: float
    active: int = 0


class UdsClients:
    """One upstream connection pool per Unix socket path. Use from one event loop."""

    def __init__(self, now: Callable[[], float] = time.monotonic, idle_s: float = IDLE_S) -> None:
        self._now = now
        self._idle_s = idle_s
        self._pool: dict[str, _Pooled] = {}
        self._last_sweep = now()
        self._sweeper: asyncio.Task[None] | None = None

    def get(self, uds: str) -> _Pooled:
        """The pool for socket ``uds`` (made on first use); count requests on ``active``."""
        pooled = self._pool.get(uds)
        if pooled is None:
            pooled = self._pool[uds] = _Pooled(UdsPool(uds), self._now())
        return pooled

    def saw(self, target: ServiceTarget) -> None:
        """The directory lists ``target``'s replicas now (``CachedServices.on_fresh``); now
        and then, close the clients of sockets unlisted for ``idle_s`` seconds."""
        now = self._now()
        for replica in target.replicas:
            pooled = self._pool.get(replica.uds)
            if pooled is not None:
                pooled.seen = now
        if now - self._last_sweep >= SWEEP_EVERY_S and self._sweeper is None:
            self._last_sweep = now
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(now))

    async def _sweep(self, now: float) -> None:
        try:
            stale = [uds for uds, p in self._pool.items()
                     if now - p.seen >= self._idle_s and p.active == 0]
            for uds in stale:
                pooled = self._pool.pop(uds)
                with contextlib.suppress(Exception):
                    await pooled.transport.aclose()
        finally:
            self._sweeper = None

    async def aclose(self) -> None:
        """Close every client (gateway shutdown)."""
        pool, self._pool = list(self._pool.values()), {}
        for pooled in pool:
            await pooled.transport.aclose()


@dataclass
class Outgoing:
    """What ``request_headers`` found: the upstream headers and how the body is framed."""

    headers: list[tuple[bytes, bytes]]
    length: int | None  # Content-Length, when the client sent one
    chunked: bool


def request_headers(scope: Scope, prefix: bytes, *, keep_authorization: bool,
                    websocket: bool = False) -> Outgoing:
    """The upstream headers for the request in ``scope`` (module docstring). For a
    WebSocket handshake ``Host``, ``User-Agent`` and ``Sec-WebSocket-*`` are left out too
    (the WebSocket client writes its own)."""
    out: list[tuple[bytes, bytes]] = []
    host = b""
    length: int | None = None
    chunked = False
    tokens: set[bytes] | None = None
    for name, value in scope["headers"]:
        low = name.lower()
        if low in _SPECIAL:
            if low == b"host":
                host = value
                if not websocket:
                    out.append((b"host", value))
            elif low == b"cookie":
                kept = strip_gpupool_cookies(value.decode("latin-1"))
                if kept:
                    out.append((b"cookie", kept.encode("latin-1")))
            elif low == b"authorization":
                if keep_authorization:
                    out.append((low, value))
            elif low == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",") if t.strip()}
            elif low == b"transfer-encoding":
                chunked = True
            continue
        if low == b"content-length":
            with contextlib.suppress(ValueError):
                length = int(value)
        if websocket and (low in _WS_DROPPED or low.startswith(b"sec-websocket-")):
            continue
        out.append((low, value))
    if tokens:
        out = [(k, v) for k, v in out if k not in tokens or k == b"host"]
    client = scope.get("client")
    scheme = str(scope.get("scheme", "http"))
    out.append((b"x-forwarded-for", str(client[0]).encode() if client else b""))
    out.append((b"x-forwarded-proto", b"https" if scheme in ("https", "wss") else b"http"))
    if host:
        out.append((b"x-forwarded-host", host))
    out.append((b"x-forwarded-prefix", prefix))
    return Outgoing(out, length, chunked)


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The replica's response headers for the client: no hop-by-hop ones, and no
    ``Set-Cookie`` for a gpupool cookie (a replica runs its owner's code)."""
    tokens: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    out = []
    for name, value in raw:
        low = name.lower()
        if low in _HOP or low in tokens:
            continue
        if low == b"set-cookie" and value.lstrip().startswith(_GPUPOOL_SET_COOKIE):
            continue
        out.append((name, value))
    return out


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client left before sending it all."""
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class StreamedBody:
    """A request body relayed as it arrives; ``started``: a byte of it was taken (from then
    on, the request can't be sent again)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


def upstream_path(scope: Scope, prefix: bytes) -> bytes:
    """The path and query the replica gets: the raw path without ``prefix`` (at least
    ``/``), the query string as received."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    path = raw_path[len(prefix):] if raw_path.startswith(prefix) else raw_path
    query: bytes = scope.get("query_string", b"")
    path = path or b"/"
    return path + b"?" + query if query else path


def _unreached(response: UpstreamResponse) -> bool:
    if response.status_code != 502:
        return False
    return (response.header(_UNREACHED) or b"").strip() == b"1"


async def _read_small(response: UpstreamResponse) -> bytes | None:
    """The whole raw body when ``Content-Length`` says it is at most ``SMALL`` bytes (read
    before anything goes to the client, so a replica failing mid-body can still be
    retried, and relayed without a disconnect watcher); None: stream it."""
    length = (response.header(b"content-length") or b"").strip()
    if not length.isdigit() or int(length) > SMALL:
        return None
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    except BaseException:
        await response.aclose()
        raise


async def forward(clients: UdsClients, balancer: Balancer, scope: Scope, receive: Receive,
                  send: Send, target: ServiceTarget, prefix: bytes,
                  headers: list[tuple[bytes, bytes]], body: bytes | StreamedBody | None) -> None:
    """Send the request in ``scope`` (under ``prefix``, ``/svc/<name>``) to ``target``'s
    replicas and relay the answer (module docstring). ``target.replicas`` should not be
    empty (else: 502 at once)."""
    name = target.name
    method: str = scope["method"]
    path = upstream_path(scope, prefix)
    tried: list[int] = []
    why = "no ready replica"
    for _ in range(MAX_ATTEMPTS):
        replica = balancer.pick(name, target.replicas, tried)
        if replica is None:
            break
        tried.append(replica.id)
        pooled = clients.get(replica.uds)
        balancer.enter(name, replica.id)
        pooled.active += 1
        try:
            try:
                response = await pooled.transport.request(
                    method.encode(), path, headers,
                    body.__aiter__() if isinstance(body, StreamedBody) else body)
                whole = await _read_small(response)
            except ClientGone:
                return
            except httpx.TransportError as exc:
                why = f"replica {replica.id}: {type(exc).__name__}"
                balancer.failed(replica.id)
                unsent = not isinstance(body, StreamedBody) or not body.started
                if unsent and (isinstance(exc, NOT_SENT) or method in RETRY_SAFE):
                    continue
                break
            if _unreached(response) and not (isinstance(body, StreamedBody) and body.started):
                await response.aclose()
                balancer.failed(replica.id)
                why = f"replica {replica.id}: the service's port refused the connection"
                continue
            try:
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": response_headers(response.raw_headers)})
                if whole is None:
                    await relay_body(response, receive, send)
                else:
                    await send({"type": "http.response.body", "body": whole})
            finally:
                await response.aclose()
            return
        finally:
            pooled.active -= 1
            balancer.leave(name, replica.id)
    await pages.json_error(502, f"service {name!r} could not be reached ({why}); "
                           "retry in a moment")(scope, receive, send)
