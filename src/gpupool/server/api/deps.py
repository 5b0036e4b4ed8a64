"""Request-scoped dependencies: the app's context and the calling principal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from gpupool.server.db.database import Database
from gpupool.server.loop_port import LoopPort
from gpupool.server.metrics.gpu_board import GpuBoard
from gpupool.server.service_board import ServiceBoard
from gpupool.server.services.errors import Forbidden
from gpupool.server.services.identity import Principal, authenticate
from gpupool.server.services.simulation import SimulationRunner
from gpupool.server.settings import Settings

METRICS_PATH = "/metrics"
"""The one path a scrape-only token may read."""


@dataclass(frozen=True)
class GatewayAccess:
    """What the API needs of the gateway: its public URL (known once it listens) and how
    to mint a one-time sign-in ticket ``(notebook, user, now) -> ticket``."""

    url: Callable[[], str]
    mint: Callable[[int, str, float], str]


@dataclass(frozen=True)
class ServicesAccess:
    """What the API needs for inference services: the board (replicas' readiness, the
    gateway's load), a way to poke the service controller, and the gateway's public URL."""

    board: ServiceBoard
    poke: Callable[[], None]
    url: Callable[[], str]


@dataclass
class AppContext:
    settings: Settings
    db: Database
    controller: LoopPort
    """The scheduling loop, through its narrow port."""
    sim: SimulationRunner | None = None
    gateway: GatewayAccess | None = None
    """None: this server has no gateway (notebooks cannot be opened)."""
    services: ServicesAccess | None = None
    """None: this server runs no service controller (services cannot be deployed)."""
    gpu: GpuBoard | None = None
    """What NVML measured last (the GPU watch's board); None: nothing is measured here."""


async def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def client_address(request: Request) -> str:
    """The client's address as the server sees it (a proxy's, behind one); "" if unknown."""
    return request.client.host if request.client else ""


async def principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """Async (no thread hop): a known token is a dictionary lookup; an unknown one costs one
    short indexed query (and, at most once a minute per token, a ``last_used_at`` write;
    refusals are audited, coalesced per address)."""
    token = None
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    ctx: AppContext = request.app.state.ctx
    who = authenticate(ctx.db, token, await client_address(request))
    if who.scope != "all" and request.url.path != METRICS_PATH:
        raise Forbidden(f"this API token is scoped to {who.scope!r}: it may only read "
                        f"{METRICS_PATH} (ask an admin for a token of user {who.user!r})")
    return who


Ctx = Annotated[AppContext, Depends(context)]
Caller = Annotated[Principal, Depends(principal)]
Address = Annotated[str, Depends(client_address)]
