"""The FastAPI application: routes, error mapping, and the loop's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from gpupool import __version__
from gpupool.server.api.artifact_routes import router as artifact_router
from gpupool.server.api.code_routes import router as code_router
from gpupool.server.api.deps import AppContext
from gpupool.server.api.docs_pages import install_docs_pages
from gpupool.server.api.hostile import SafeJSONResponse, refuse_hostile_input
from gpupool.server.api.metrics_routes import router as metrics_router
from gpupool.server.api.notebook_routes import router as notebook_router
from gpupool.server.api.pipeline_routes import router as pipeline_router
from gpupool.server.api.responses import errors
from gpupool.server.api.routes import router
from gpupool.server.api.server_routes import router as server_router
from gpupool.server.api.service_routes import router as service_router
from gpupool.server.api.storage_errors import install as install_storage_errors
from gpupool.server.api.storage_errors import ping
from gpupool.server.api.usage_routes import router as usage_router
from gpupool.server.isolation import shell_executor
from gpupool.server.pipelines.engine import PipelineEngine
from gpupool.server.pipelines.http_guard import HttpGuard
from gpupool.server.pipelines.step_remote import RemoteFiles
from gpupool.server.services.errors import ServiceError
from gpupool.server.services.simulation import SimulationRunner
from gpupool.web import static_dir


def _field(loc: tuple[object, ...] | list[object]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


class _ApiAwareConsole:
    """The console's static files, except that a request whose path an API route serves but
    not with this method gets the API's 405 (JSON ``detail``, ``Allow`` listing the route's
    methods), not the static mount's ``Allow: GET, HEAD``. Starlette's router hands such a
    request to the catch-all mount, as a full match beats the route's partial one."""

    def __init__(self, files: ASGIApp, routes: list[BaseRoute]) -> None:
        self.files = files
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed: set[str] = set()
            for route in self.routes:
                if isinstance(route, Mount):
                    continue
                match, _ = route.matches(scope)
                if match is Match.PARTIAL:  # the path matched, the method did not
                    allowed |= getattr(route, "methods", None) or set()
            if allowed:
                answer = SafeJSONResponse(
                    {"detail": f"method {scope['method']} not allowed here; "
                               f"allowed: {', '.join(sorted(allowed))}"},
                    status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
                await answer(scope, receive, send)
                return
        await self.files(scope, receive, send)


def create_app(ctx: AppContext, run_loop: bool = True) -> FastAPI:
    pipelines = PipelineEngine(ctx.settings.home, ctx.db, lambda: ctx.controller.models,
                               ctx.controller.wake, ctx.settings.tick_seconds,
                               http_guard=HttpGuard.from_settings(ctx.settings),
                               shell_executor=shell_executor(ctx.settings, ctx.controller),
                               workspace=ctx.controller.launcher.workspace,
                               remote_files=remote_files(ctx))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_loop:
            ctx.controller.start()
            pipelines.start()
        try:
            yield
        finally:
            if run_loop:
                pipelines.stop()
                ctx.controller.stop()

    if ctx.sim is None:
        ctx.sim = SimulationRunner(ctx.settings.home / "traces")
    # Error answers are all {"detail": str} (ErrorBody, documented per route in the OpenAPI
    # from the one table of responses.py), 422 included: never FastAPI's array model.
    # Every route first refuses unstorable text and NaN/Infinity in its query, path and body
    # (422 naming the field), before authentication and before anything is written.
    app = FastAPI(title="gpupool", version=__version__, lifespan=lifespan,
                  dependencies=[Depends(refuse_hostile_input)],
                  docs_url=None, redoc_url=None)  # offline pages: see docs_pages.py
    app.state.ctx = ctx
    app.state.pipelines = pipelines
    app.include_router(router)
    app.include_router(pipeline_router)
    app.include_router(server_router)  # /api/v1/server: gpupool down
    app.include_router(notebook_router)
    app.include_router(service_router)
    app.include_router(usage_router)
    app.include_router(code_router)  # /api/v1/code: gpupool run --code
    app.include_router(artifact_router)  # /api/v1/jobs/{id}/artifacts
    app.include_router(metrics_router)  # /metrics: Prometheus, admins only
    install_docs_pages(app)  # /docs and /redoc from packaged assets, no CDN

    @app.get("/healthz", responses=errors(422, 503))
    def healthz() -> dict[str, str]:
        ping(ctx.db)  # 503 naming the database while it cannot be reached
        return {"status": "ok"}

    # A full disk answers 507, an unreachable database 503 (api/storage_errors.py).
    install_storage_errors(app, ctx.db, ctx.settings.home)

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        return SafeJSONResponse({"detail": "; ".join(problems)}, status_code=422)

    # The web console (static files of gpupool.web) takes every path the API does not: it is
    # mounted last so /api/v1, /healthz and /docs match first.
    # An API path with a method it does not serve answers the API's 405 (see _ApiAwareConsole).
    # FastAPI keeps an included router as one entry of app.router.routes: list its own routes.
    api_routes = [*app.router.routes, *router.routes, *pipeline_router.routes,
                  *server_router.routes, *notebook_router.routes, *service_router.routes,
                  *metrics_router.routes, *code_router.routes, *artifact_router.routes]
    app.mount("/", _ApiAwareConsole(StaticFiles(directory=static_dir(), html=True), api_routes),
              name="console")
    return app


def remote_files(ctx: AppContext) -> RemoteFiles | None:
    """How pipeline job steps' files travel, on a pool of other machines' nodes (Ray)."""
    if not ctx.settings.ray:
        return None
    workspace = ctx.controller.launcher.workspace
    return RemoteFiles(ctx.db, ctx.settings.home, workspace.pipelines / "files",
                       ctx.controller.artifacts.store)
