"""The FastAPI application: routes, error mapping, and the loop's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from gpupool import __version__
from gpupool.server.api.deps import AppContext
from gpupool.server.api.hostile import SafeJSONResponse, refuse_hostile_input
from gpupool.server.api.pipeline_routes import router as pipeline_router
from gpupool.server.api.routes import router
from gpupool.server.isolation import shell_executor
from gpupool.server.pipelines.engine import PipelineEngine
from gpupool.server.pipelines.http_guard import HttpGuard
from gpupool.server.services.errors import ServiceError
from gpupool.server.services.simulation import SimulationRunner
from gpupool.web import static_dir


def _field(loc: tuple[object, ...] | list[object]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def create_app(ctx: AppContext, run_loop: bool = True) -> FastAPI:
    pipelines = PipelineEngine(ctx.settings.home, ctx.db, lambda: ctx.controller.models,
                               ctx.controller.wake, ctx.settings.tick_seconds,
                               http_guard=HttpGuard.from_settings(ctx.settings),
                               shell_executor=shell_executor(ctx.settings, ctx.controller),
                               workspace=ctx.controller.launcher.workspace)

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
    # Every route first refuses unstorable text and NaN/Infinity in its query, path and body
    # (422 naming the field), before authentication and before anything is written.
    app = FastAPI(title="gpupool", version=__version__, lifespan=lifespan,
                  dependencies=[Depends(refuse_hostile_input)])
    app.state.ctx = ctx
    app.state.pipelines = pipelines
    app.include_router(router)
    app.include_router(pipeline_router)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        return SafeJSONResponse({"detail": "; ".join(problems)}, status_code=422)

    # The web console (static files of gpupool.web) takes every path the API does not: it is
    # mounted last so /api/v1, /healthz and /docs match first.
    app.mount("/", StaticFiles(directory=static_dir(), html=True), name="console")
    return app
