"""Who may pass the gateway to which notebook: the one place where every way in is judged.

``Gate.admit`` turns an incoming HTTP request or WebSocket handshake for one notebook into
either ``Admitted`` (the visitor and where to forward) or a ``Response`` to send instead:

1. credential: ``Authorization: Bearer <gpupool token>``, else the notebook's session
   cookie; neither, or a bad one → 401 (HTML for a browser, JSON otherwise). A present but
   invalid Bearer token is final: the cookie is not tried in its place.
2. cross-site requests: a cookie-authenticated request with an unsafe method, and every
   cookie-authenticated WebSocket handshake, must carry an ``Origin`` that is the
   gateway's own (its public origin, or exactly the origin of the request's ``Host``) → 403.
3. the notebook: unknown, or not the visitor's own (admins excepted) → 404, alike, so a
   caller can't learn which notebooks exist.
4. state: not ready → 503; a browser navigating to their own suspended notebook resumes
   it (program GETs such as Jupyter's polling do not, so an open tab doesn't undo an idle
   suspend).
5. activity: an admitted request is reported with ``touch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from gpupool.server.gateway import pages
from gpupool.server.gateway.cache import CachedDirectory
from gpupool.server.gateway.directory import Target, Visitor
from gpupool.server.gateway.headers import origin_of
from gpupool.server.gateway.routes import Mount
from gpupool.server.gateway.sessions import read_session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Admitted:
    visitor: Visitor
    target: Target
    by_cookie: bool


class Gate:
    """Judges requests for one mount (notebooks); see the module docstring."""

    def __init__(self, directory: CachedDirectory, key: bytes, public_origin: str,
                 clock: Callable[[], float], mount: Mount) -> None:
        self.directory = directory
        self.mount = mount
        self._key = key
        self._public_origin = public_origin
        self._clock = clock

    def own_origins(self, conn: HTTPConnection) -> set[str]:
        """The origins this request may come from: the public one and its own Host's."""
        origins = {self._public_origin}
        host = conn.headers.get("host")
        if host:
            scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
            host_origin = origin_of(f"{scheme}://{host}")
            if host_origin is not None:
                origins.add(host_origin)
        return origins

    async def admit(self, conn: HTTPConnection, nb_id: int) -> Admitted | Response:
        websocket = conn.scope["type"] == "websocket"
        method = "GET" if websocket else str(conn.scope["method"])
        found = await self._identify(conn, nb_id)
        if isinstance(found, Response):
            return found
        visitor, by_cookie = found
        if by_cookie and (websocket or method not in SAFE_METHODS):
            origin = conn.headers.get("origin")
            if origin is None or origin_of(origin) not in self.own_origins(conn):
                return pages.json_error(
                    403, "cross-site request refused: a cookie-authenticated "
                    f"{'WebSocket' if websocket else method} request must come from the "
                    f"gateway's own pages (Origin {self._public_origin})")
        target = await self.mount.lookup(self.directory, nb_id)
        if target is None or not self.mount.may_enter(visitor, target):
            return pages.json_error(404, f"no notebook {nb_id}")
        if not target.ready:
            resumed = False
            if (self.mount.resume is not None and target.state == "suspended"
                    and pages.wants_html(conn) and visitor.user == target.owner_user):
                await self.mount.resume(self.directory, nb_id, visitor)
                resumed = True
            return pages.not_ready(conn, nb_id, target.state, resumed)
        self.directory.touch(nb_id)
        return Admitted(visitor, target, by_cookie)

    async def _identify(self, conn: HTTPConnection,
                        nb_id: int) -> tuple[Visitor, bool] | Response:
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = token.strip()
            visitor = await self.directory.authenticate(token) if token else None
            if visitor is None:
                return pages.sign_in_needed(conn, nb_id, "the gpupool API token in the "
                                            "Authorization header is invalid or revoked")
            return visitor, False
        value = conn.cookies.get(self.mount.cookie_name(nb_id))
        if value is None:
            return pages.sign_in_needed(conn, nb_id, f"not signed in to notebook {nb_id}")
        session = read_session(self._key, value, self._clock())
        if session is None or session.nb_id != nb_id:
            return pages.sign_in_needed(conn, nb_id, f"the session for notebook {nb_id} "
                                        "has expired or is not valid")
        visitor = await self.directory.visitor(session.user)
        if visitor is None:
            return pages.sign_in_needed(conn, nb_id, f"user {session.user!r} can no "
                                        "longer sign in")
        return visitor, True
