"""``GET /api/v1/usage``: allocated GPU-seconds by team, user, job or queue over a window
(``services/usage_report.py``). Any authenticated caller: users see their team's usage,
admins everyone's."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from gpupool.schemas.usage import GpuHeat, GpuHeatRow, IdleHolder, UsageBy, UsageRow, UsageSeries
from gpupool.server.api.deps import Caller, Ctx
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.responses import API_ERRORS, errors
from gpupool.server.metrics.gpu_board import BUCKET_S
from gpupool.server.services import usage_report
from gpupool.server.services.errors import Invalid

router = APIRouter(prefix="/api/v1", route_class=SafeRoute, responses=API_ERRORS)

DEFAULT_WINDOW_S = 7 * 86400.0
ISO_8601 = (r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?"
            r"(Z|[+-]\d{2}:?\d{2})?$")


def _moment(name: str, text: str) -> float:
    """UNIX seconds of an ISO 8601 text (UTC when it names no zone); Invalid naming it."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{name}: {text!r} is not a date-time (ISO 8601, e.g. "
                      "2026-12-01T08:00:00Z)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _window(since: str | None, until: str | None, default_s: float,
            now: float) -> tuple[float, float]:
    """(start, end) in UNIX seconds: ``until`` or now, ``since`` or ``default_s`` before."""
    end = _moment("until", until) if until is not None else now
    return (_moment("since", since) if since is not None else end - default_s), end


@router.get("/usage", response_model=list[UsageRow], responses=errors(422))
def get_usage(
    ctx: Ctx, caller: Caller,
    by: Annotated[UsageBy, Query(description="What each row sums over.")] = UsageBy.TEAM,
    since: Annotated[str | None, Query(
        pattern=ISO_8601, description="Start of the window: an ISO 8601 date or date-time "
        "(UTC unless it names a zone; default: 7 days before its end).")] = None,
    until: Annotated[str | None, Query(
        pattern=ISO_8601, description="End of the window, as since (default: now).")] = None,
) -> list[UsageRow]:
    """Allocated GPU-seconds per team, user, job or queue inside the window, largest first:
    every job attempt's GPUs × the seconds it held them (a running attempt until now)."""
    now = time.time()
    start, end = _window(since, until, DEFAULT_WINDOW_S, now)
    return usage_report.usage(ctx.db, caller, by, start, end, now)


@router.get("/usage/series", response_model=UsageSeries, responses=errors(422))
def get_usage_series(
    ctx: Ctx, caller: Caller,
    by: Annotated[UsageBy, Query(description="What each series sums over.")] = UsageBy.TEAM,
    since: Annotated[str | None, Query(
        pattern=ISO_8601, description="Start of the window: an ISO 8601 date or date-time "
        "(UTC unless it names a zone; default: 24 hours before its end).")] = None,
    until: Annotated[str | None, Query(
        pattern=ISO_8601, description="End of the window, as since (default: now).")] = None,
    step_s: Annotated[float, Query(ge=60, le=31 * 86400,
                                   description="Seconds per bucket (at most 1000 buckets).")]
        = 3600.0,
) -> UsageSeries:
    """Allocated GPU-seconds per team (user, job, queue) in consecutive buckets: the console's
    GPU-hours over time. Users see their team's, admins everyone's."""
    now = time.time()
    start, end = _window(since, until, 86400.0, now)
    return usage_report.usage_series(ctx.db, caller, by, start, end, step_s, now)


@router.get("/usage/gpus", response_model=GpuHeat)
def gpu_heat(ctx: Ctx, caller: Caller) -> GpuHeat:
    """Per GPU, the mean utilisation (NVML) of each 5-minute bucket of the last 6 hours, and
    the running jobs whose GPUs are idle now (your team's; an admin sees every team's).
    ``measured`` is false on a pool without NVML."""
    board = ctx.gpu
    if board is None:
        return GpuHeat(measured=False, bucket_s=BUCKET_S, buckets=[])
    starts, rows = board.history(time.time())
    idle = [IdleHolder(job=j.job, team=j.team) for j in board.board.jobs
            if j.idle and (caller.admin or j.team == caller.team)]
    return GpuHeat(measured=True, bucket_s=BUCKET_S,
                   buckets=[datetime.fromtimestamp(t, UTC) for t in starts],
                   gpus=[GpuHeatRow(node=n, gpu=g, utilization=u) for n, g, u in rows],
                   idle=idle)
