"""The asyncio client (see :mod:`gpupool.sdk.client` for the contract of both)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from gpupool.schemas.admin import (
    AuditEvent,
    TeamCreate,
    TeamView,
    TokenInfo,
    TokensRevoked,
    TokenView,
    UserDeleted,
    UserView,
    WhoAmI,
)
from gpupool.schemas.cluster import NodeView, QueueView
from gpupool.schemas.jobs import JobOrder, JobSpec, JobView, Kind, LogChunk, Phase
from gpupool.sdk import _admin_wire as admin_wire
from gpupool.sdk import _paging
from gpupool.sdk import _wire as wire
from gpupool.sdk import notebooks as nb
from gpupool.sdk._base import DEFAULT_TIMEOUT, _Base
from gpupool.sdk._tls import Verify
from gpupool.sdk.config import ServerConfig
from gpupool.sdk.errors import ApiError

T = TypeVar("T")


class AsyncClient(_Base):
    """The asyncio twin of ``Client``: the same methods as coroutines (``follow_logs`` is an
    async iterator). Use ``async with``, or ``await aclose()``."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        config: ServerConfig | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Verify = None,
    ) -> None:
        super().__init__(url, token, config, timeout, verify)
        self._http = httpx.AsyncClient(
            base_url=self.config.url, headers=self._headers, timeout=timeout, transport=transport,
            verify=self._verify,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, call: wire.Call[T]) -> T:
        try:
            response = await self._http.send(wire.request(self._http, call))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return wire.read(call, response)

    async def _id(self, ref: str | int) -> str:
        found = wire.job_id(ref)
        return found if found is not None else (await self.job(ref)).id

    async def whoami(self) -> WhoAmI:
        return await self._do(wire.whoami())

    async def submit(
        self, spec: JobSpec | Mapping[str, Any] | None = None, /, *,
        idempotency_key: str | None = None, **fields: Any,
    ) -> JobView:
        """As ``Client.submit``."""
        return await self._do(wire.submit(wire.spec_of(spec, fields), idempotency_key))

    async def jobs(
        self,
        phase: Phase | str | Sequence[Phase | str] | None = None,
        queue: str | None = None,
        name: str | None = None,
        all_teams: bool = False,
        *,
        order: JobOrder | str = JobOrder.NEWEST,
        limit: int | None = None,
        kind: Kind | str | None = None,
    ) -> list[JobView]:
        """As ``Client.jobs``."""
        filters = wire.job_filters(phase, queue, name, order, kind)
        return await _paging.acollect(self._do, f"{wire.API}/jobs", JobView, filters, limit)

    async def job(self, ref: str | int) -> JobView:
        found = wire.job_id(ref)
        if found is not None:
            return await self._do(wire.job(found))
        name = str(ref).strip()
        latest = wire.newest_named(name, await self.jobs(name=name, limit=1))
        return await self._do(wire.job(latest.id))

    async def cancel(self, ref: str | int) -> JobView:
        return await self._do(wire.cancel(await self._id(ref)))

    async def logs(self, ref: str | int, offset: int = 0) -> LogChunk:
        return await self._do(wire.logs(await self._id(ref), offset))

    async def log_tail(self, ref: str | int, lines: int = 20) -> str:
        """As ``Client.log_tail``."""
        job_id = await self._id(ref)
        size = (await self._do(wire.logs(job_id, 0, limit=1))).size
        start = max(0, size - wire.TAIL_BYTES)
        chunk = await self._do(wire.logs(job_id, start, limit=wire.TAIL_BYTES))
        return wire.last_lines(chunk.data, lines, cut=start > 0)

    async def follow_logs(self, ref: str | int, poll: float = 0.3) -> AsyncIterator[str]:
        job_id, offset = await self._id(ref), 0
        while True:
            chunk = await self._do(wire.logs(job_id, offset))
            offset = chunk.offset
            if chunk.data:
                yield chunk.data
            if chunk.complete:
                return
            if len(chunk.data) < wire.FULL_CHUNK:
                await asyncio.sleep(poll)

    async def wait(
        self, ref: str | int, timeout: float | None = None, poll: float = 0.3
    ) -> JobView:
        job_id, deadline = await self._id(ref), self._deadline(timeout)
        while True:
            view = await self._do(wire.job(job_id))
            if view.phase.final:
                return view
            self._check_deadline(view, deadline, timeout)
            await asyncio.sleep(poll)

    # --- notebooks (see Client) -------------------------------------------------------

    async def create_notebook(
        self, name: str | None = None, gpus: float | str = 0,
        gpu_memory: int | str | None = None, gpu_model: str | None = None,
        cpu: float | str = 0, memory: int | str = 0, queue: str | None = None,
        priority: int = 0, idle_timeout_s: float | None = None,
        env: Mapping[str, str] | None = None, *, idempotency_key: str | None = None,
    ) -> JobView:
        """As ``Client.create_notebook``."""
        spec = nb.notebook_spec(name, gpus, gpu_memory, gpu_model, cpu, memory, queue,
                                priority, idle_timeout_s, env)
        return await self._do(wire.submit(spec, idempotency_key))

    async def notebooks(
        self, phase: Phase | str | Sequence[Phase | str] | None = None,
        queue: str | None = None, name: str | None = None, *, limit: int | None = None,
    ) -> list[JobView]:
        """As ``Client.notebooks``."""
        return await self.jobs(phase, queue, name, kind=nb.NOTEBOOK, limit=limit)

    async def notebook(self, ref: str | int) -> JobView:
        """As ``Client.notebook``."""
        job_id = await self._notebook_id(ref)
        view = await self._do(wire.job(job_id))
        if view.kind != Kind.NOTEBOOK:
            raise ApiError(404, f"job {job_id} is not a notebook")
        return view

    async def _notebook_id(self, ref: str | int) -> str:
        found = wire.job_id(ref)
        if found is not None:
            return found
        name = str(ref).strip()
        named = await self.notebooks(name=name, limit=1)
        return wire.newest_named(name, named, "notebook").id

    async def suspend(self, ref: str | int) -> JobView:
        """As ``Client.suspend``."""
        return await self._do(wire.suspend(await self._notebook_id(ref)))

    async def resume(self, ref: str | int) -> JobView:
        """As ``Client.resume``."""
        return await self._do(wire.resume(await self._notebook_id(ref)))

    async def open_url(self, ref: str | int) -> str:
        """As ``Client.open_url``."""
        return await self._do(wire.open_notebook(await self._notebook_id(ref)))

    async def wait_ready(self, ref: str | int, timeout: float | None = None,
                         poll: float = 0.5) -> JobView:
        """As ``Client.wait_ready``."""
        job_id, deadline = await self._notebook_id(ref), self._deadline(timeout)
        while True:
            view = await self._do(wire.job(job_id))
            if nb.ready(view):
                return view
            self._check_deadline(view, deadline, timeout)
            await asyncio.sleep(poll)

    async def nodes(self) -> list[NodeView]:
        return await self._do(wire.nodes())

    async def queues(self) -> list[QueueView]:
        return await self._do(wire.queues())

    async def teams(self) -> list[TeamView]:
        return await self._do(wire.teams())

    async def create_team(
        self, name: str, quota_gpus: float = 0, borrow_limit_gpus: float = 0, *,
        weight: float = 1.0, cohort: str | None = None, lend_limit_gpus: float | None = None,
        default_run_limit_s: float | None = None,
        notebook_idle_timeout_s: float | None = None,
        notebook_max_idle_timeout_s: float | None = None,
        notebook_max_lifetime_s: float | None = None,
    ) -> TeamView:
        """Admin only: a team (and its queue) with a guaranteed quota and a borrow limit; its
        fair-share ``weight``, ``cohort`` (teams that lend each other unused quota) and how
        much of its quota it lends (``lend_limit_gpus``; None: all of it), how long its
        running jobs without a time limit are assumed to run (``default_run_limit_s``; None:
        the server's default), and its notebooks' default and longest idle timeouts and
        longest run (``notebook_idle_timeout_s``, ``notebook_max_idle_timeout_s``,
        ``notebook_max_lifetime_s``; None: the server's). A value out of bounds is pydantic's
        ValidationError, before anything is sent."""
        body = TeamCreate(name=name, quota_gpus=quota_gpus, borrow_limit_gpus=borrow_limit_gpus,
                          weight=weight, cohort=cohort, lend_limit_gpus=lend_limit_gpus,
                          default_run_limit_s=default_run_limit_s,
                          notebook_idle_timeout_s=notebook_idle_timeout_s,
                          notebook_max_idle_timeout_s=notebook_max_idle_timeout_s,
                          notebook_max_lifetime_s=notebook_max_lifetime_s)
        return await self._do(wire.create_team(body))

    async def update_team(
        self, name: str, quota_gpus: float | None = None, borrow_limit_gpus: float | None = None,
        *, weight: float | None = None, cohort: str | None = wire.KEEP,
        lend_limit_gpus: float | None = wire.KEEP, default_run_limit_s: float | None = wire.KEEP,
        notebook_idle_timeout_s: float | None = wire.KEEP,
        notebook_max_idle_timeout_s: float | None = wire.KEEP,
        notebook_max_lifetime_s: float | None = wire.KEEP,
    ) -> TeamView:
        """Admin only: change what is given, keep the rest. ``cohort=None`` takes the team
        out of its cohort; ``lend_limit_gpus=None`` lends all its unused quota again;
        ``default_run_limit_s=None`` gives its queue the server's default run limit; None for
        a ``notebook_*`` setting gives its notebooks the server's."""
        return await self._do(wire.update_team(
            name, quota_gpus=quota_gpus, borrow_limit_gpus=borrow_limit_gpus, weight=weight,
            cohort=cohort, lend_limit_gpus=lend_limit_gpus,
            default_run_limit_s=default_run_limit_s,
            notebook_idle_timeout_s=notebook_idle_timeout_s,
            notebook_max_idle_timeout_s=notebook_max_idle_timeout_s,
            notebook_max_lifetime_s=notebook_max_lifetime_s))

    async def users(self) -> list[UserView]:
        return await self._do(wire.users())

    async def create_user(
        self, name: str, team: str, admin: bool = False, unix_user: str | None = None
    ) -> UserView:
        return await self._do(admin_wire.create_user(name, team, admin, unix_user))

    async def disable_user(self, name: str) -> UserView:
        return await self._do(admin_wire.disable_user(name))

    async def enable_user(self, name: str) -> UserView:
        return await self._do(admin_wire.enable_user(name))

    async def delete_user(self, name: str) -> UserDeleted:
        return await self._do(admin_wire.delete_user(name))

    async def delete_team(self, name: str) -> TeamView:
        return await self._do(admin_wire.delete_team(name))

    async def create_token(self, user: str, expires_in_s: float | None = None) -> TokenView:
        return await self._do(admin_wire.create_token(user, expires_in_s))

    async def tokens(
        self, user: str | None = None, include_all: bool = False
    ) -> list[TokenInfo]:
        return await self._do(admin_wire.tokens(user, include_all))

    async def revoke_token(self, token_id: int) -> TokensRevoked:
        return await self._do(admin_wire.revoke_token(token_id))

    async def revoke_user_tokens(self, user: str) -> TokensRevoked:
        return await self._do(admin_wire.revoke_user_tokens(user))

    async def audit(self, limit: int | None = 100) -> list[AuditEvent]:
        return await _paging.acollect(self._do, f"{wire.API}/audit", AuditEvent, {}, limit)
