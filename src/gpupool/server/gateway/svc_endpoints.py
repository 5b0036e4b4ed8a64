"""The routes of inference services, ``/svc/<name>/...``: the gateway's second family of
routes beside the notebook mounts (no cookies, no sign-in, no ``_gpupool`` paths; requests
are balanced over replicas instead of going to one upstream).

Contracts:

- ``/svc/<name>`` → 307 to ``/svc/<name>/`` (query kept); ``/svc/<name>/<rest>``: every
  HTTP method, and WebSockets, forwarded to a replica as ``/<rest>`` with
  ``X-Forwarded-Prefix: /svc/<name>`` (``svc_proxy``).
- Who may call (``admit``): unknown service → 404 JSON. A public service: anyone, and the
  client's ``Authorization`` reaches the replica unchanged. Otherwise ``Authorization:
  Bearer <x>`` is needed, where ``x`` is a gpupool API token of a member of the service's
  team or of an admin, or a live API key of the service (``key_valid``); it never reaches
  the replica. No credential → 401 with ``WWW-Authenticate: Bearer``; an invalid one → 401;
  a token of another team's member → 403. All answers are JSON.
- No ready replica: the request waits (counted under key 0 of the service's ``Load``)
  while the service is woken, up to ``wake_timeout_s`` → 503 JSON with ``Retry-After: 5``;
  a client that leaves stops its waiting.
- WebSockets: one replica, one attempt, relayed frame by frame to its Unix socket.
- Lookups go through caches (``CachedDirectory``, ``CachedServices``): on a cache hit a
  request reaches its replica without touching the thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.asyncio.client import unix_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from gpupool.server.gateway import pages
from gpupool.server.gateway.balancer import WAITING, Balancer
from gpupool.server.gateway.cache import CachedDirectory
from gpupool.server.gateway.http_proxy import ClientGone
from gpupool.server.gateway.service_directory import ServiceDirectory, ServiceTarget
from gpupool.server.gateway.svc_cache import CachedServices
from gpupool.server.gateway.svc_proxy import (
    MAX_BUFFERED,
    StreamedBody,
    UdsClients,
    forward,
    read_body,
    request_headers,
    upstream_path,
)
from gpupool.server.gateway.ws_proxy import (
    OPEN_TIMEOUT_S,
    deny,
    relay_frames,
)

PREFIX = "svc"
BEARER = {"WWW-Authenticate": "Bearer"}
INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _prefix(scope: Scope) -> bytes:
    """``/svc/<name>`` as the client wrote it (raw)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    end = raw.find(b"/", len(PREFIX) + 2)
    return raw if end < 0 else raw[:end]


def _authorization(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            return str(value.decode("latin-1"))
    return ""


class ServiceEndpoints:
    """Handlers for ``/svc/...``, owning the service cache, the balancer and the socket
    clients (``aclose`` at gateway shutdown)."""

    def __init__(self, services: ServiceDirectory, directory: CachedDirectory,
                 clock: Callable[[], float], cache_ttl: float = 1.0, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clients = UdsClients(monotonic)
        self.services = CachedServices(services, clock, cache_ttl, on_fresh=self.clients.saw)
        self.balancer = Balancer(self.services.report, now=monotonic)
        self.directory = directory

    def routes(self) -> list[BaseRoute]:
        root = f"/{PREFIX}/{{name}}"
        return [
            Route(root, self.to_slash),
            Route(root + "/{rest:path}", _Asgi(self.proxy_http)),
            WebSocketRoute(root + "/{rest:path}", self.proxy_websocket),
        ]

    async def aclose(self) -> None:
        await self.services.aclose()
        await self.balancer.aclose()
        await self.clients.aclose()

    async def to_slash(self, request: Request) -> Response:
        """``/svc/x`` → ``/svc/x/`` (relative paths of the service resolve below it)."""
        query = request.url.query
        location = _prefix(request.scope).decode("latin-1") + "/" + (f"?{query}" if query else "")
        return RedirectResponse(location, status_code=307)

    async def admit(self, scope: Scope, name: str) -> ServiceTarget | Response:
        """The service when this caller may call it, else the answer (module docstring)."""
        target = await self.services.service(name)
        if target is None:
            return pages.json_error(404, f"no service {name!r}")
        if target.public:
            return target
        scheme, _, credential = _authorization(scope).partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return pages.json_error(401, f"service {name!r} needs a credential: "
                                    "Authorization: Bearer <gpupool API token or an API key "
                                    "of the service>", BEARER)
        visitor = await self.directory.authenticate(credential)
        if visitor is not None:
            if visitor.admin or visitor.team == target.team:
                return target
            return pages.json_error(403, f"user {visitor.user!r} (team {visitor.team!r}) may "
                                    f"not call service {name!r} of team {target.team!r}: use "
                                    "one of the service's API keys")
        if await self.services.key_valid(name, credential):
            return target
        return pages.json_error(401, "the Bearer credential is neither a gpupool API token "
                                f"nor a live API key of service {name!r} (revoked?)", INVALID)

    async def _ready(self, name: str, target: ServiceTarget,
                     receive: Receive | None) -> ServiceTarget | Response:
        """``target`` once it has a replica: wake it and wait (module docstring). With
        ``receive`` (the request body already taken), a client leaving raises ClientGone."""
        if target.replicas:
            return target
        self.balancer.enter(name, WAITING)
        try:
            if receive is None:
                found = await self.services.until_ready(name, target.wake_timeout_s)
            else:
                found, gone = None, False
                async with anyio.create_task_group() as tasks:

                    async def watch() -> None:
                        nonlocal gone
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        gone = True
                        tasks.cancel_scope.cancel()

                    tasks.start_soon(watch)
                    found = await self.services.until_ready(name, target.wake_timeout_s)
                    tasks.cancel_scope.cancel()
                if gone:
                    raise ClientGone
        finally:
            self.balancer.leave(name, WAITING)
        if found is None:
            return pages.json_error(404, f"no service {name!r}")
        if not found.replicas:
            return pages.json_error(
                503, f"service {name!r} is starting: no replica is ready yet "
                f"(waited {target.wake_timeout_s:g} s); retry in a moment",
                {"Retry-After": str(pages.RETRY_AFTER_S)})
        return found

    async def proxy_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        name: str = scope["path_params"]["name"]
        verdict = await self.admit(scope, name)
        if isinstance(verdict, Response):
            await verdict(scope, receive, send)
            return
        prefix = _prefix(scope)
        out = request_headers(scope, prefix, keep_authorization=verdict.public)
        body: bytes | StreamedBody | None = None
        try:
            if out.chunked or (out.length is not None and out.length > MAX_BUFFERED):
                body = StreamedBody(receive)
            elif out.length is not None:
                body = await read_body(receive)
                if body is None:
                    return
            ready = await self._ready(name, verdict,
                                      None if isinstance(body, StreamedBody) else receive)
            if isinstance(ready, Response):
                await ready(scope, receive, send)
                return
            await forward(self.clients, self.balancer, scope, receive, send, ready, prefix,
                          out.headers, body)
        except ClientGone:
            return
        finally:
            self.balancer.finish(name)

    async def proxy_websocket(self, websocket: WebSocket) -> None:
        scope = websocket.scope
        name: str = websocket.path_params["name"]
        verdict = await self.admit(scope, name)
        if isinstance(verdict, Response):
            await deny(websocket, verdict)
            return
        try:
            ready = await self._ready(name, verdict, None)
            if isinstance(ready, Response):
                await deny(websocket, ready)
                return
            replica = self.balancer.pick(name, ready.replicas)
            assert replica is not None  # ready.replicas is not empty
            self.balancer.enter(name, replica.id)
            try:
                await self._relay(websocket, ready, replica.id, replica.uds)
            finally:
                self.balancer.leave(name, replica.id)
        finally:
            self.balancer.finish(name)

    async def _relay(self, websocket: WebSocket, target: ServiceTarget, replica_id: int,
                     uds: str) -> None:
        """Relay ``websocket`` to the same path on the replica at ``uds``, like
        ``ws_proxy.relay`` (subprotocol, frames, close codes)."""
        scope, name, prefix = websocket.scope, target.name, _prefix(websocket.scope)
        out = request_headers(scope, prefix, keep_authorization=target.public, websocket=True)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in out.headers]
        path = upstream_path(scope, prefix).decode("latin-1")
        uri = f"ws://{websocket.headers.get('host', 'localhost')}{path}"
        try:
            parse_uri(uri)
        except InvalidURI:
            uri = f"ws://localhost{path}"
        offered = [Subprotocol(p) for p in scope.get("subprotocols", [])]
        try:
            upstream = await unix_connect(
                uds, uri, additional_headers=headers, subprotocols=offered or None,
                user_agent_header=websocket.headers.get("user-agent"), max_size=None,
                compression=None, open_timeout=OPEN_TIMEOUT_S)
        except InvalidStatus as exc:
            status = exc.response.status_code
            await deny(websocket, pages.json_error(status if 400 <= status < 500 else 502,
                       f"service {name!r} refused the WebSocket ({status})"))
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self.balancer.failed(replica_id)
            await deny(websocket, pages.json_error(502, f"service {name!r} could not be "
                       f"reached ({type(exc).__name__}); retry in a moment"))
            return
        await relay_frames(websocket, upstream)


class _Asgi:
    """Wraps a coroutine so that Starlette treats it as a raw ASGI app (all methods)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
