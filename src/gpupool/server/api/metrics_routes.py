"""``GET /metrics``: the server's metrics in Prometheus' text format (server/metrics/)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from gpupool.server.api.deps import Ctx, principal
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.responses import API_ERRORS, errors
from gpupool.server.metrics.collector import CONTENT_TYPE, new_registry, render
from gpupool.server.services.admin import require_admin

router = APIRouter(route_class=SafeRoute, responses=API_ERRORS)

_EXAMPLE = """# HELP gpupool_gpu_allocated_ratio Share of each GPU allocated to workloads (0 to 1)
# TYPE gpupool_gpu_allocated_ratio gauge
gpupool_gpu_allocated_ratio{gpu="0",model="A100",node="n0"} 0.5
"""


def _registry(request: Request, ctx: Ctx, aggregate: bool = False) -> CollectorRegistry:
    """The app's own registry, or its aggregate view (each made on first use, kept on
    ``app.state``)."""
    name = "metrics_aggregate_registry" if aggregate else "metrics_registry"
    registry: CollectorRegistry | None = getattr(request.app.state, name, None)
    if registry is None:
        registry = new_registry(ctx.db, ctx.controller.metrics, ctx.gpu, aggregate)
        setattr(request.app.state, name, registry)
    return registry


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        **errors(403),
        200: {"description": "The metrics, in Prometheus' text exposition format 0.0.4",
              "content": {"text/plain": {"schema": {"type": "string"},
                                         "example": _EXAMPLE}}},
    },
)
async def metrics(request: Request, ctx: Ctx,
                  authorization: Annotated[str | None, Header()] = None) -> Response:
    """The server's metrics for Prometheus: each GPU's allocated share, teams' allocated and
    quota GPUs, workloads by phase/queue/kind, idle notebooks by team, submits, cycle times,
    queue waits and preemptions (docs/guide/administration.md, "Metrics").

    An admin's token, or a scrape-only one (``gpupool admin token create NAME --scope
    metrics``); 401 without a token, 403 for any other: the answer names every team and
    queue. A scrape-only token is refused everywhere else.

    With the server's ``--metrics-public-aggregate``, a request without a token gets the
    aggregate view: no series that names a team, queue, job or user (workloads by phase and
    kind, GPUs' allocation and utilisation, totals); a token still gets the full view."""
    if authorization is None and ctx.settings.metrics_public_aggregate:
        registry = _registry(request, ctx, aggregate=True)
    else:
        caller = await principal(request, authorization)
        if caller.scope != "metrics":
            require_admin(caller)
        registry = _registry(request, ctx)
    body = await run_in_threadpool(render, registry)  # reads the database: off the loop
    return Response(content=body, media_type=CONTENT_TYPE)
