"""What the sync and async clients share: the requests of each endpoint and turning answers
into models. The model-free half (``Call``, sending, errors) is ``_http``, re-exported here.
No I/O here."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter

from gpupool.schemas.admin import (
    TeamCreate,
    TeamUpdate,
    TeamView,
    TokenCreate,
    TokenView,
    UserCreate,
    UserView,
    WhoAmI,
)
from gpupool.schemas.cluster import NodeView, QueueView
from gpupool.schemas.jobs import (
    GatewaySignIn,
    JobOrder,
    JobSpec,
    JobView,
    Kind,
    LogChunk,
    Phase,
)
from gpupool.schemas.usage import UsageRow, UsageSeries

# The model-free half, re-exported: the clients and some commands use it as ``wire.X``.
from gpupool.sdk._http import API as API
from gpupool.sdk._http import Call as Call
from gpupool.sdk._http import Page as Page
from gpupool.sdk._http import error_message as error_message
from gpupool.sdk._http import read as read
from gpupool.sdk._http import request as request
from gpupool.sdk._http import transport_error as transport_error
from gpupool.sdk.errors import ApiError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A log read that returns at least this much is probably not the end: read again at once.
FULL_CHUNK = 64 * 1024


def _one(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def _many(model: type[M]) -> Callable[[Any], list[M]]:
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]

    def parse(data: Any) -> list[M]:
        result: list[M] = adapter.validate_python(data)
        return result

    return parse


def job_id(ref: str | int) -> str | None:
    """The job id when ``ref`` is one (an int or a string of digits), else None (a name)."""
    if isinstance(ref, int):
        return str(ref)
    ref = ref.strip()
    return ref if ref.isdigit() else None


def newest_named(name: str, found: list[JobView], what: str = "job") -> JobView:
    """The newest job of a by-name lookup (the server lists newest first); ApiError(404)
    naming ``what`` was looked for when there is none."""
    if not found:
        raise ApiError(404, f"no {what} named {name!r}")
    return max(found, key=lambda j: int(j.id) if j.id.isdigit() else -1)


def whoami() -> Call[WhoAmI]:
    return Call("GET", f"{API}/whoami", _one(WhoAmI))


def spec_of(spec: JobSpec | Mapping[str, Any] | None,
            fields: Mapping[str, Any]) -> JobSpec | Mapping[str, Any]:
    """The job of ``submit(spec)`` or ``submit(**fields)``; TypeError for both or neither."""
    if spec is not None and fields:
        raise TypeError("submit() takes a spec or JobSpec fields as keywords, not both "
                        f"(got a spec and {', '.join(sorted(fields))})")
    if spec is None and not fields:
        raise TypeError("submit() needs a job: a JobSpec, a mapping, or fields as keywords, "
                        "e.g. submit(command=['python', 'train.py'], gpus=0.5)")
    return spec if spec is not None else fields


def submit(spec: JobSpec | Mapping[str, Any], idempotency_key: str | None = None) -> Call[JobView]:
    """Validates a mapping locally first (pydantic ValidationError naming the field). The
    request carries ``idempotency_key``, or a fresh random one: resending this same Call
    (a retry) can never queue a second job."""
    if not isinstance(spec, JobSpec):
        spec = JobSpec.model_validate(dict(spec))
    body = spec.model_dump(mode="json", exclude_unset=True)
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    return Call("POST", f"{API}/jobs", _one(JobView), body=body,
                headers={IDEMPOTENCY_HEADER: key})


def job_filters(
    phase: Phase | str | Sequence[Phase | str] | None = None,
    queue: str | None = None,
    name: str | None = None,
    order: JobOrder | str = JobOrder.NEWEST,
    kind: Kind | str | None = None,
) -> dict[str, str | list[str]]:
    """The query of a job listing: ``phase`` one phase or several (any of them); ``kind``
    only workloads of that kind (``job`` or ``notebook``; None: both). ValueError for a
    phase, order or kind that does not exist."""
    params: dict[str, str | list[str]] = {"order": JobOrder(order).value}
    if phase is not None:
        phases = [phase] if isinstance(phase, str) else list(phase)
        params["phase"] = [Phase(p).value for p in phases]
    if queue is not None:
        params["queue"] = queue
    if name is not None:
        params["name"] = name
    if kind is not None:
        params["kind"] = Kind(kind).value
    return params


def job(job_id: str) -> Call[JobView]:
    return Call("GET", f"{API}/jobs/{job_id}", _one(JobView))


def cancel(job_id: str) -> Call[JobView]:
    return Call("POST", f"{API}/jobs/{job_id}/cancel", _one(JobView))


def suspend(job_id: str) -> Call[JobView]:
    """Notebooks: stop its processes, give its GPU share back, keep its files (202)."""
    return Call("POST", f"{API}/jobs/{job_id}/suspend", _one(JobView))


def resume(job_id: str) -> Call[JobView]:
    """Notebooks: queue a suspended one again (202)."""
    return Call("POST", f"{API}/jobs/{job_id}/resume", _one(JobView))


def open_notebook(job_id: str) -> Call[str]:
    """Notebooks: a one-time browser sign-in address on the gateway (its ``url``)."""
    return Call("POST", f"{API}/jobs/{job_id}/open",
                lambda data: GatewaySignIn.model_validate(data).url)


def logs(job_id: str, offset: int, limit: int | None = None) -> Call[LogChunk]:
    params = {"offset": str(offset)}
    if limit is not None:
        params["limit"] = str(limit)
    return Call("GET", f"{API}/jobs/{job_id}/logs", _one(LogChunk), params=params)


TAIL_BYTES = 64 * 1024


def last_lines(text: str, lines: int, cut: bool) -> str:
    """The last ``lines`` lines of ``text`` (``cut``: it starts mid-log, so its first,
    probably partial, line is dropped)."""
    found = text.splitlines(keepends=True)
    if cut and len(found) > 1:
        found = found[1:]
    return "".join(found[-lines:])


def nodes() -> Call[list[NodeView]]:
    return Call("GET", f"{API}/nodes", _many(NodeView))


def queues() -> Call[list[QueueView]]:
    return Call("GET", f"{API}/queues", _many(QueueView))


def usage(by: str = "team", since: datetime | None = None,
          until: datetime | None = None) -> Call[list[UsageRow]]:
    return Call("GET", f"{API}/usage", _many(UsageRow),
                params=_window({"by": by}, since, until))


def usage_series(by: str, since: datetime | None, until: datetime | None,
                 step_s: float) -> Call[UsageSeries]:
    return Call("GET", f"{API}/usage/series", _one(UsageSeries),
                params=_window({"by": by, "step_s": step_s}, since, until))


def _window(params: dict[str, Any], since: datetime | None,
            until: datetime | None) -> dict[str, Any]:
    """``params`` with the window's ends given (ISO 8601)."""
    if since is not None:
        params["since"] = since.isoformat()
    if until is not None:
        params["until"] = until.isoformat()
    return params


def teams() -> Call[list[TeamView]]:
    return Call("GET", f"{API}/teams", _many(TeamView))


def create_team(body: TeamCreate) -> Call[TeamView]:
    return Call("POST", f"{API}/teams", _one(TeamView), body=body.model_dump(mode="json"))


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()
"""``update_team``'s default for the fields that may be cleared with None (``cohort``,
``lend_limit_gpus``, ``default_run_limit_s``, the ``notebook_*`` settings): leave the field
as it is."""


_CLEARABLE = ("cohort", "lend_limit_gpus", "default_run_limit_s", "notebook_idle_timeout_s",
              "notebook_max_idle_timeout_s", "notebook_max_lifetime_s")


def update_team(name: str, **changes: Any) -> Call[TeamView]:
    """The PATCH of ``changes`` (TeamUpdate's fields): a None quota, borrow limit or weight
    and a KEEP value are left out (the server keeps them); a None cohort, lending limit,
    default run limit or notebook setting is sent, and clears it."""
    sent = {k: v for k, v in changes.items()
            if v is not KEEP and (v is not None or k in _CLEARABLE)}
    body = TeamUpdate.model_validate(sent)
    path = f"{API}/teams/{quote(name, safe='')}"
    return Call("PATCH", path, _one(TeamView), body=body.model_dump(mode="json",
                                                                     exclude_unset=True))


def users() -> Call[list[UserView]]:
    return Call("GET", f"{API}/users", _many(UserView))


def create_user(name: str, team: str, admin: bool) -> Call[UserView]:
    body = UserCreate(name=name, team=team, admin=admin)
    return Call("POST", f"{API}/users", _one(UserView), body=body.model_dump(mode="json"))


def create_token(user: str) -> Call[TokenView]:
    body = TokenCreate(user=user)
    return Call("POST", f"{API}/tokens", _one(TokenView), body=body.model_dump(mode="json"))
