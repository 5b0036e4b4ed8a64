"""The gateway as one ASGI app: ``create_gateway(directory, key, public_url)``.

Routes: ``GET /`` and ``GET /healthz`` answer ``{"gateway": "gpupool"}``; each mount of
``routes.MOUNTS`` adds its sign-in, redirect and proxy routes (notebooks, ``/nb/<id>/``);
when a ``ServiceDirectory`` is given, the second family of routes, inference services at
``/svc/<name>/`` (``svc_endpoints``: API credentials, no cookies, balanced over replicas),
is added too; everything else is a JSON 404. Run it with lifespan on, so that the pooled
upstream clients (and the services' load reports) are closed at shutdown.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gpupool.server.gateway import pages
from gpupool.server.gateway.access import Gate
from gpupool.server.gateway.cache import CachedDirectory
from gpupool.server.gateway.directory import Directory
from gpupool.server.gateway.endpoints import MountEndpoints, UpstreamPool
from gpupool.server.gateway.headers import origin_of
from gpupool.server.gateway.routes import MOUNTS
from gpupool.server.gateway.service_directory import ServiceDirectory
from gpupool.server.gateway.svc_endpoints import ServiceEndpoints
from gpupool.server.gateway.tickets import TicketBook


async def _hello(request: Request) -> Response:
    return JSONResponse({"gateway": "gpupool"})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return pages.json_error(status, str(detail))


def create_gateway(directory: Directory, key: bytes, public_url: str, *,
                   clock: Callable[[], float] = time.time,
                   cache_ttl: float = 1.0,
                   services: ServiceDirectory | None = None) -> Starlette:
    """The gateway app in front of ``directory``.

    ``key`` signs tickets and session cookies (``keys.load_or_create_key``). ``public_url``
    is where browsers reach the gateway (``http://host:8471``): its origin is the one
    cookie-authenticated writes and WebSockets must come from, and an https URL makes the
    session cookie ``Secure``. ``clock`` (epoch seconds) drives ticket and cookie expiry,
    the ``cache_ttl``-second directory caches and ``touch``; tests inject a fake one.
    ``services``: route ``/svc/<name>/...`` to inference services too (see
    ``svc_endpoints``); without it those paths are 404 like any unknown one.
    Raises ``ValueError`` when ``public_url`` is not an http(s) URL.
    """
    public_origin = origin_of(public_url)
    if public_origin is None:
        raise ValueError(f"gateway public URL {public_url!r} is not an http(s) URL "
                         "such as http://gpu-box:8471")
    cached = CachedDirectory(directory, clock, cache_ttl)
    tickets = TicketBook(key, clock)
    pool = UpstreamPool()
    routes: list[BaseRoute] = [Route("/", _hello), Route("/healthz", _hello)]
    for mount in MOUNTS:
        gate = Gate(cached, key, public_origin, clock, mount)
        endpoints = MountEndpoints(gate, tickets, pool, key, clock,
                                   secure_cookies=public_origin.startswith("https:"))
        routes.extend(endpoints.routes())
    service_endpoints = None
    if services is not None:
        service_endpoints = ServiceEndpoints(services, cached, clock, cache_ttl)
        routes.extend(service_endpoints.routes())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await pool.aclose()
            if service_endpoints is not None:
                await service_endpoints.aclose()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error})
    app.state.gateway_directory = cached
    app.state.gateway_services = service_endpoints
    return app
