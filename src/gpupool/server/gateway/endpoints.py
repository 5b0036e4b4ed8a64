"""The endpoints of one mount: sign-in, the bare-prefix redirect, and the HTTP and
WebSocket proxies. Every proxied request goes through ``Gate.admit`` first; nothing under
``/<prefix>/<key>/_gpupool/`` is ever forwarded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from gpupool.server.gateway import pages
from gpupool.server.gateway.access import Gate
from gpupool.server.gateway.headers import upstream_headers
from gpupool.server.gateway.http_proxy import forward, new_client
from gpupool.server.gateway.routes import RESERVED
from gpupool.server.gateway.sessions import make_session, set_cookie_header
from gpupool.server.gateway.tickets import TicketBook
from gpupool.server.gateway.ws_proxy import deny, relay


class UpstreamPool:
    """The one pooled upstream HTTP client, made on first use, closed by ``aclose``."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _reserved(rest: str) -> bool:
    return rest == RESERVED or rest.startswith(RESERVED + "/")


class MountEndpoints:
    """Handlers for one mount, sharing its gate, the ticket book and the upstream pool."""

    def __init__(self, gate: Gate, tickets: TicketBook, pool: UpstreamPool, key: bytes,
                 clock: Callable[[], float], secure_cookies: bool) -> None:
        self.gate = gate
        self.mount = gate.mount
        self._tickets = tickets
        self._pool = pool
        self._key = key
        self._clock = clock
        self._secure = secure_cookies

    def routes(self) -> list[BaseRoute]:
        root = self.mount.pattern()
        return [
            Route(f"{root}/{RESERVED}/signin", self.signin, methods=["GET"]),
            Route(root, self.to_slash),
            Route(root + "/{rest:path}", _Asgi(self.proxy_http)),
            WebSocketRoute(root + "/{rest:path}", self.proxy_websocket),
        ]

    async def signin(self, request: Request) -> Response:
        """Redeem a one-time ticket: set the session cookie and go to the landing page."""
        nb_id: int = request.path_params["key"]
        user = self._tickets.redeem(request.query_params.get("ticket", ""), nb_id)
        if user is None:
            return pages.bad_ticket(f"The sign-in link for notebook {nb_id} is expired, "
                                    "already used, or not for this notebook.")
        if await self.gate.directory.visitor(user) is None:
            return pages.bad_ticket(f"User {user!r} can no longer sign in.")
        base = self.mount.base(nb_id)
        response = RedirectResponse(base + self.mount.landing, status_code=303,
                                    headers={**pages.NO_STORE, "Referrer-Policy": "no-referrer"})
        value = make_session(self._key, nb_id, user, self._clock())
        cookie = set_cookie_header(self.mount.cookie_name(nb_id), value, base, self._secure)
        response.raw_headers.append((b"set-cookie", cookie.encode("latin-1")))
        return response

    async def to_slash(self, request: Request) -> Response:
        """``/nb/7`` → ``/nb/7/`` (the session cookie's path ends with the slash)."""
        query = request.url.query
        target = self.mount.base(request.path_params["key"]) + (f"?{query}" if query else "")
        return RedirectResponse(target, status_code=307)

    async def proxy_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        nb_id: int = scope["path_params"]["key"]
        if _reserved(scope["path_params"]["rest"]):
            await pages.json_error(404, "Not Found")(scope, receive, send)
            return
        verdict = await self.gate.admit(request, nb_id)
        if isinstance(verdict, Response):
            await verdict(scope, receive, send)
            return
        headers = upstream_headers(_decoded(scope), verdict.target, client_ip=_client_ip(scope),
                                   proto=_proto(scope), own_origins=self.gate.own_origins(request))
        await forward(self._pool.client, scope, receive, send, verdict.target, headers,
                      self.mount.dropped_cookies)

    async def proxy_websocket(self, websocket: WebSocket) -> None:
        nb_id: int = websocket.path_params["key"]
        if _reserved(websocket.path_params["rest"]):
            await deny(websocket, pages.json_error(404, "Not Found"))
            return
        verdict = await self.gate.admit(websocket, nb_id)
        if isinstance(verdict, Response):
            await deny(websocket, verdict)
            return
        scope = websocket.scope
        headers = upstream_headers(_decoded(scope), verdict.target, client_ip=_client_ip(scope),
                                   proto=_proto(scope),
                                   own_origins=self.gate.own_origins(websocket), websocket=True)
        directory = self.gate.directory
        await relay(websocket, verdict.target, headers, lambda: directory.touch(nb_id))


class _Asgi:
    """Wraps a coroutine so that Starlette treats it as a raw ASGI app (all methods)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def _decoded(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]


def _client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _proto(scope: Scope) -> str:
    scheme = str(scope.get("scheme", "http"))
    return {"ws": "http", "wss": "https"}.get(scheme, scheme)
