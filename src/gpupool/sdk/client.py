"""Python clients of the gpupool REST API: ``Client`` (blocking) and ``AsyncClient`` (asyncio)
with the same methods.

A job reference (``ref``) is a job id (an int or a string of digits) or a job name, which
means the newest job of that name visible to the caller; the notebook methods take a
notebook's id or name (the newest notebook of that name). Every failed request raises
ApiError with a one-line message (status 0 when the server could not be reached); a job
spec or admin body that breaks the contract raises pydantic's ValidationError before any
request is sent; ``wait_ready`` raises NotebookNotReady for a notebook that cannot become
ready without someone acting (ended, suspended).

``verify`` checks an https server's certificate: True (the public CAs), a path to a PEM CA
file (a self-signed certificate is its own CA file), or False (no check: tests only); by
default the configured CA file (``GPUPOOL_CA_FILE``), else the public CAs. A certificate that
does not check out fails every request with an ApiError(0) naming the URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

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
from gpupool.schemas.usage import UsageRow, UsageSeries
from gpupool.sdk import _admin_wire as admin_wire
from gpupool.sdk import _paging
from gpupool.sdk import _wire as wire
from gpupool.sdk import notebooks as nb
from gpupool.sdk._base import DEFAULT_TIMEOUT, _Blocking
from gpupool.sdk._tls import Verify
from gpupool.sdk.config import ServerConfig
from gpupool.sdk.errors import ApiError

if TYPE_CHECKING:
    from pathlib import Path

    from gpupool.schemas.artifacts import ArtifactAttempt
    from gpupool.sdk.async_client import AsyncClient
    from gpupool.sdk.code_pack import CodeUpload
    from gpupool.sdk.pipelines import Pipelines
    from gpupool.sdk.services import Services

T = TypeVar("T")

__all__ = ["DEFAULT_TIMEOUT", "AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":  # imported on first use (asyncio costs a CLI command time)
        from gpupool.sdk.async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Client(_Blocking):
    """A blocking client. ``Client()`` finds the server by ``discover()``; pass ``url`` and
    ``token`` (or a ready ``config``) to choose, and ``verify`` (see the module) to check an
    https server's certificate. Use it as a context manager, or ``close()`` it, to release its
    connections. ``transport`` is for tests (``httpx.MockTransport``). ConfigError when no
    server is configured or the CA file cannot be used."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        config: ServerConfig | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        verify: Verify = None,
    ) -> None:
        super().__init__(url, token, config, timeout, verify)
        self._http = httpx.Client(
            base_url=self.config.url, headers=self._headers, timeout=timeout, transport=transport,
            verify=self._verify,
        )
        self._pipelines: Pipelines | None = None
        self._services: Services | None = None

    @property
    def services(self) -> Services:
        """Inference services and their API keys (gpupool.sdk.services; imported on first
        use, with YAML)."""
        if self._services is None:
            from gpupool.sdk.services import Services

            self._services = Services(self._do)
        return self._services

    @property
    def pipelines(self) -> Pipelines:
        """Pipeline runs, schedules and secrets (gpupool.sdk.pipelines; imported on first
        use, with YAML)."""
        if self._pipelines is None:
            from gpupool.sdk.pipelines import Pipelines

            self._pipelines = Pipelines(self._do)
        return self._pipelines

    def close(self) -> None:
        self._http.close()

    def _do(self, call: wire.Call[T]) -> T:
        try:
            response = self._http.send(wire.request(self._http, call))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return wire.read(call, response)

    def _id(self, ref: str | int) -> str:
        found = wire.job_id(ref)
        return found if found is not None else self.job(ref).id

    def upload_code(self, folder: str | Path, limit_mib: int = 100) -> CodeUpload:
        """Pack ``folder`` (gpupool.sdk.code_pack: what git would track, .gitignore
        respected) and upload it unless your team has that very archive already; give the
        answer's ``digest`` as a job's ``code``. A tree unchanged since this user's client
        packed it (names, sizes, times) is not even packed again when the server has it.
        CodeError when the folder cannot be packed or is over ``limit_mib``; ApiError when
        the server refuses it."""
        from gpupool.sdk import job_files

        try:
            return job_files.upload(self._http, folder, limit_mib, self.timeout)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def artifacts(self, ref: str | int) -> list[ArtifactAttempt]:
        """What each attempt of the job kept of its declared ``artifacts``, oldest first."""
        from gpupool.schemas.artifacts import ArtifactAttempt

        job = self._id(ref)
        return self._do(wire.Call("GET", f"{wire.API}/jobs/{job}/artifacts",
                                  parse=lambda data: [ArtifactAttempt.model_validate(a)
                                                      for a in data]))

    def download_artifacts(self, ref: str | int, to: str | Path,
                           attempt: int | None = None) -> Path:
        """Save one attempt's artifacts (default: the last that kept any) as a gzip'd tar at
        ``to`` (a folder: a file named after the job and attempt in it); returns the path.
        ApiError(404) when no attempt kept any."""
        from gpupool.sdk import job_files

        job = self._id(ref)
        if attempt is None:
            kept = [a.attempt for a in self.artifacts(job) if a.status == "kept"]
            if not kept:
                raise ApiError(404, f"job {job}: no attempt kept artifacts")
            attempt = kept[-1]
        try:
            return job_files.download(self._http, job, attempt, to, self.timeout)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def whoami(self) -> WhoAmI:
        """Who the token belongs to: user, team, admin."""
        return self._do(wire.whoami())

    def submit(
        self, spec: JobSpec | Mapping[str, Any] | None = None, /, *,
        idempotency_key: str | None = None, **fields: Any,
    ) -> JobView:
        """Submit a job; the answer is the new job (normally pending). The job is ``spec``
        (a JobSpec or a mapping of its fields) or the JobSpec fields as keywords:
        ``submit(command=["python", "train.py"], gpus=0.5, memory="16GiB")``.

        Each call sends an ``Idempotency-Key`` header: ``idempotency_key``, or a fresh
        uuid4. Calling again with the same key and spec (within 24 h) answers the job the
        first call created instead of queueing another; the same key with another spec is
        an ApiError(422)."""
        return self._do(wire.submit(wire.spec_of(spec, fields), idempotency_key))

    def jobs(
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
        """Jobs visible to the caller (an admin sees every team's: ``all_teams`` changes
        nothing), filtered by what is given (``phase``: one or several; ``kind``: ``"job"``
        or ``"notebook"``, None: both), in ``order`` (newest first, or ``"queue"``: as the
        scheduler takes them). Every match, following the server's pages, or only the first
        ``limit``."""
        filters = wire.job_filters(phase, queue, name, order, kind)
        return _paging.collect(self._do, f"{wire.API}/jobs", JobView, filters, limit)

    def job(self, ref: str | int) -> JobView:
        """One job with its events; ApiError(404) when no job matches ``ref``."""
        found = wire.job_id(ref)
        if found is not None:
            return self._do(wire.job(found))
        name = str(ref).strip()
        latest = wire.newest_named(name, self.jobs(name=name, limit=1))
        return self._do(wire.job(latest.id))

    def cancel(self, ref: str | int) -> JobView:
        """Ask for the job to stop; a running job may take its grace period to end."""
        return self._do(wire.cancel(self._id(ref)))

    def logs(self, ref: str | int, offset: int = 0) -> LogChunk:
        """The job's output from ``offset``; read again from ``chunk.offset`` for more."""
        return self._do(wire.logs(self._id(ref), offset))

    def log_tail(self, ref: str | int, lines: int = 20) -> str:
        """The last ``lines`` lines of the job's output (from its last 64 KiB)."""
        job_id = self._id(ref)
        size = self._do(wire.logs(job_id, 0, limit=1)).size
        start = max(0, size - wire.TAIL_BYTES)
        chunk = self._do(wire.logs(job_id, start, limit=wire.TAIL_BYTES))
        return wire.last_lines(chunk.data, lines, cut=start > 0)

    def follow_logs(self, ref: str | int, poll: float = 0.3) -> Iterator[str]:
        """Non-empty pieces of output as they come, until the job ended and all was read."""
        job_id, offset = self._id(ref), 0
        while True:
            chunk = self._do(wire.logs(job_id, offset))
            offset = chunk.offset
            if chunk.data:
                yield chunk.data
            if chunk.complete:
                return
            if len(chunk.data) < wire.FULL_CHUNK:
                time.sleep(poll)

    def wait(self, ref: str | int, timeout: float | None = None, poll: float = 0.3) -> JobView:
        """The job once its phase is final; TimeoutError after ``timeout`` seconds."""
        job_id, deadline = self._id(ref), self._deadline(timeout)
        while True:
            view = self._do(wire.job(job_id))
            if view.phase.final:
                return view
            self._check_deadline(view, deadline, timeout)
            time.sleep(poll)

    # --- notebooks: JupyterLab on a GPU share, reached through the gateway ---------------
    # A notebook reference is its id, or its name (the newest notebook of that name: a live
    # notebook's name is unique in its team).

    def create_notebook(
        self, name: str | None = None, gpus: float | str = 0,
        gpu_memory: int | str | None = None, gpu_model: str | None = None,
        cpu: float | str = 0, memory: int | str = 0, queue: str | None = None,
        priority: int = 0, idle_timeout_s: float | None = None,
        env: Mapping[str, str] | None = None, *, idempotency_key: str | None = None,
    ) -> JobView:
        """Queue a notebook (the server starts JupyterLab as you once it is placed); the
        answer is the new notebook, normally pending. ``idle_timeout_s``: suspend it after
        that long without activity (None: the server's default). ApiError(409) when a live
        notebook of the team already has ``name``; a field that breaks the contract is
        pydantic's ValidationError before anything is sent. ``wait_ready`` waits for it."""
        spec = nb.notebook_spec(name, gpus, gpu_memory, gpu_model, cpu, memory, queue,
                                priority, idle_timeout_s, env)
        return self._do(wire.submit(spec, idempotency_key))

    def notebooks(
        self, phase: Phase | str | Sequence[Phase | str] | None = None,
        queue: str | None = None, name: str | None = None, *, limit: int | None = None,
    ) -> list[JobView]:
        """Notebooks visible to the caller, newest first, filtered as ``jobs``: every
        match, following the server's pages, or only the first ``limit``."""
        return self.jobs(phase, queue, name, kind=nb.NOTEBOOK, limit=limit)

    def notebook(self, ref: str | int) -> JobView:
        """One notebook with its events; ApiError(404) when no notebook matches ``ref`` (an
        id of a batch job included)."""
        job_id = self._notebook_id(ref)
        view = self._do(wire.job(job_id))
        if view.kind != Kind.NOTEBOOK:
            raise ApiError(404, f"job {job_id} is not a notebook")
        return view

    def _notebook_id(self, ref: str | int) -> str:
        found = wire.job_id(ref)
        if found is not None:
            return found
        name = str(ref).strip()
        return wire.newest_named(name, self.notebooks(name=name, limit=1), "notebook").id

    def suspend(self, ref: str | int) -> JobView:
        """Suspend a notebook now: its processes stop (kernels lose their state), its GPU
        share goes back to the pool, its files stay. ApiError(409) for a batch job or a
        notebook that ended."""
        return self._do(wire.suspend(self._notebook_id(ref)))

    def resume(self, ref: str | int) -> JobView:
        """Queue a suspended notebook again; ``wait_ready`` waits until it answers.
        ApiError(409) unless it is suspended."""
        return self._do(wire.resume(self._notebook_id(ref)))

    def open_url(self, ref: str | int) -> str:
        """A one-time address that signs a browser in to the notebook on the gateway and
        opens it: valid about a minute, once. Give it to a browser, not to a script (a
        script sends its token to ``JobView.url`` instead)."""
        return self._do(wire.open_notebook(self._notebook_id(ref)))

    def wait_ready(self, ref: str | int, timeout: float | None = None,
                   poll: float = 0.5) -> JobView:
        """The notebook once it answers through the gateway (its ``url`` set).
        NotebookNotReady when it cannot get there without someone acting (it ended, is
        suspended, or is not a notebook); TimeoutError after ``timeout`` seconds."""
        job_id, deadline = self._notebook_id(ref), self._deadline(timeout)
        while True:
            view = self._do(wire.job(job_id))
            if nb.ready(view):
                return view
            self._check_deadline(view, deadline, timeout)
            time.sleep(poll)

    def nodes(self) -> list[NodeView]:
        """Every node with its GPUs, what is allocated and to which jobs."""
        return self._do(wire.nodes())

    def queues(self) -> list[QueueView]:
        """The queues visible to the caller with quota, use and counts."""
        return self._do(wire.queues())

    def usage(self, by: str = "team", since: datetime | None = None,
              until: datetime | None = None) -> list[UsageRow]:
        """Allocated GPU-seconds per team (or ``by`` user, job, queue) in ``[since,
        until)`` (default: the last 7 days), largest first; users see their team's."""
        return self._do(wire.usage(by, since, until))

    def usage_series(self, by: str = "team", since: datetime | None = None,
                     until: datetime | None = None, step_s: float = 3600.0) -> UsageSeries:
        """Allocated GPU-seconds per ``by`` key in buckets of ``step_s`` seconds over
        ``[since, until)`` (default: the last 24 hours)."""
        return self._do(wire.usage_series(by, since, until, step_s))

    def teams(self) -> list[TeamView]:
        return self._do(wire.teams())

    def create_team(
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
        return self._do(wire.create_team(body))

    def update_team(
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
        return self._do(wire.update_team(
            name, quota_gpus=quota_gpus, borrow_limit_gpus=borrow_limit_gpus, weight=weight,
            cohort=cohort, lend_limit_gpus=lend_limit_gpus,
            default_run_limit_s=default_run_limit_s,
            notebook_idle_timeout_s=notebook_idle_timeout_s,
            notebook_max_idle_timeout_s=notebook_max_idle_timeout_s,
            notebook_max_lifetime_s=notebook_max_lifetime_s))

    def users(self) -> list[UserView]:
        """Admin only."""
        return self._do(wire.users())

    def create_user(
        self, name: str, team: str, admin: bool = False, unix_user: str | None = None
    ) -> UserView:
        """Admin only. ``unix_user``: an existing account its workloads run as (a root
        server only; left out, the server creates ``gp-<name>``)."""
        return self._do(admin_wire.create_user(name, team, admin, unix_user))

    def disable_user(self, name: str) -> UserView:
        """Admin only: refuse the user's tokens from the next request on; their queued and
        running jobs are left alone (cancel them to stop them)."""
        return self._do(admin_wire.disable_user(name))

    def enable_user(self, name: str) -> UserView:
        """Admin only: accept the user's (live) tokens again."""
        return self._do(admin_wire.enable_user(name))

    def delete_user(self, name: str) -> UserDeleted:
        """Admin only: revoke the user's tokens, free the name, remove the Unix account the
        server made; ApiError(409) naming what is still active (jobs, pipelines)."""
        return self._do(admin_wire.delete_user(name))

    def delete_team(self, name: str) -> TeamView:
        """Admin only: delete a team with no users, active jobs or pipelines."""
        return self._do(admin_wire.delete_team(name))

    def create_token(self, user: str, expires_in_s: float | None = None,
                     scope: str = "all") -> TokenView:
        """Admin only: a new token for ``user``, expiring after ``expires_in_s`` seconds
        (None: never); its plaintext is in this answer only. ``scope="metrics"``: the token
        may read ``/metrics`` and nothing else."""
        return self._do(admin_wire.create_token(user, expires_in_s, scope))

    def tokens(self, user: str | None = None, include_all: bool = False) -> list[TokenInfo]:
        """Admin only: live tokens (``include_all``: revoked and expired too), never the
        token itself."""
        return self._do(admin_wire.tokens(user, include_all))

    def revoke_token(self, token_id: int) -> TokensRevoked:
        """Admin only: the token is refused from the next request on."""
        return self._do(admin_wire.revoke_token(token_id))

    def revoke_user_tokens(self, user: str) -> TokensRevoked:
        """Admin only: revoke every token of ``user``."""
        return self._do(admin_wire.revoke_user_tokens(user))

    def audit(self, limit: int | None = 100) -> list[AuditEvent]:
        """Admin only: the newest ``limit`` admin actions and refused sign-ins (every one
        when None), newest first."""
        return _paging.collect(self._do, f"{wire.API}/audit", AuditEvent, {}, limit)
