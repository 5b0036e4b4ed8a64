"""What the sync and async clients share: the requests of each endpoint, turning answers into
models, and turning failures into one-line ApiErrors. No I/O here."""

from __future__ import annotations

import re
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

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
from gpupool.schemas.jobs import JobOrder, JobSpec, JobView, LogChunk, Phase
from gpupool.sdk.config import CA_FILE_ENV
from gpupool.sdk.errors import ApiError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=BaseException)
API = "/api/v1"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A log read that returns at least this much is probably not the end: read again at once.
FULL_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how to read its 2xx answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    paged: bool = False
    """A page of a listing: ``parse`` gets ``{"items": rows, "next": cursor or None}``."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` is None on the last."""

    items: list[T]
    next_cursor: str | None


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


def newest_named(name: str, found: list[JobView]) -> JobView:
    """The newest job of a by-name lookup (the server lists newest first)."""
    if not found:
        raise ApiError(404, f"no job named {name!r}")
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
) -> dict[str, str | list[str]]:
    """The query of a job listing: ``phase`` one phase or several (any of them)."""
    params: dict[str, str | list[str]] = {"order": JobOrder(order).value}
    if phase is not None:
        phases = [phase] if isinstance(phase, str) else list(phase)
        params["phase"] = [Phase(p).value for p in phases]
    if queue is not None:
        params["queue"] = queue
    if name is not None:
        params["name"] = name
    return params


def job(job_id: str) -> Call[JobView]:
    return Call("GET", f"{API}/jobs/{job_id}", _one(JobView))


def cancel(job_id: str) -> Call[JobView]:
    return Call("POST", f"{API}/jobs/{job_id}/cancel", _one(JobView))


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


def teams() -> Call[list[TeamView]]:
    return Call("GET", f"{API}/teams", _many(TeamView))


def create_team(name: str, quota_gpus: float, borrow_limit_gpus: float) -> Call[TeamView]:
    body = TeamCreate(name=name, quota_gpus=quota_gpus, borrow_limit_gpus=borrow_limit_gpus)
    return Call("POST", f"{API}/teams", _one(TeamView), body=body.model_dump(mode="json"))


def update_team(
    name: str, quota_gpus: float | None, borrow_limit_gpus: float | None
) -> Call[TeamView]:
    body = TeamUpdate(quota_gpus=quota_gpus, borrow_limit_gpus=borrow_limit_gpus)
    path = f"{API}/teams/{quote(name, safe='')}"
    return Call("PATCH", path, _one(TeamView), body=body.model_dump(mode="json", exclude_none=True))


def users() -> Call[list[UserView]]:
    return Call("GET", f"{API}/users", _many(UserView))


def create_user(name: str, team: str, admin: bool) -> Call[UserView]:
    body = UserCreate(name=name, team=team, admin=admin)
    return Call("POST", f"{API}/users", _one(UserView), body=body.model_dump(mode="json"))


def create_token(user: str) -> Call[TokenView]:
    body = TokenCreate(user=user)
    return Call("POST", f"{API}/tokens", _one(TokenView), body=body.model_dump(mode="json"))


def request(client: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
    """The httpx request of ``call`` (a body is sent as JSON only when there is one)."""
    return client.build_request(call.method, call.path, params=call.params or None,
                                json=call.body, headers=call.headers or None)


def read(call: Call[T], response: httpx.Response) -> T:
    """The parsed 2xx answer; ApiError for any other status or an answer that does not fit
    the contract (a client and server of different versions)."""
    if not response.is_success:
        raise ApiError(response.status_code, error_message(response))
    try:
        data = response.json()
        if call.paged:
            data = {"items": data, "next": response.headers.get("X-Next-Cursor")}
        return call.parse(data)
    except ValueError as exc:  # bad JSON, or pydantic's ValidationError (a ValueError)
        problem = _problem(exc)
        raise ApiError(
            response.status_code,
            f"unexpected answer from the server to {call.method} {call.path}: {problem} "
            "(are the client and the server the same gpupool version?)",
        ) from None


def error_message(response: httpx.Response) -> str:
    """One line from an error answer: ``detail`` as a string, FastAPI's list of validation
    problems as ``body.gpus: <msg>; ...``, else the status and the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail.strip():
        return _first_line(detail)
    if isinstance(detail, list) and detail:
        problems = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()))
                msg = str(item.get("msg", "invalid"))
                problems.append(f"{loc}: {msg}" if loc else msg)
            else:
                problems.append(str(item))
        return _first_line("; ".join(problems))
    text = _first_line(response.text)[:200]
    reason = response.reason_phrase or "error"
    return f"HTTP {response.status_code} {reason}" + (f": {text}" if text else "")


def transport_error(url: str, source: str, exc: httpx.TransportError, timeout: float) -> ApiError:
    """ApiError(0, ...) for a request that got no answer, with a hint where one helps."""
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(0, f"the gpupool server at {url} did not answer within {timeout:g} s")
    bad_cert = _cause(exc, ssl.SSLCertVerificationError)
    if bad_cert is not None:
        why = bad_cert.verify_message or _first_line(str(bad_cert))
        return ApiError(
            0,
            f"cannot verify the TLS certificate of the gpupool server at {url}: {why}; if it "
            f"uses a self-signed or private certificate, set {CA_FILE_ENV} to its CA file",
        )
    if _cause(exc, ssl.SSLError) is not None:  # e.g. "[SSL: X] wrong version number (_ssl.c:1)"
        reason = re.sub(r"\[SSL: \w+\] | \(_ssl\.c:\d+\)", "", _first_line(str(exc)))
        return ApiError(0, f"TLS with the gpupool server at {url} failed: {reason} (does it "
                        "serve HTTPS? a server without --tls-cert needs an http:// URL)")
    reason = _first_line(str(exc)) or type(exc).__name__
    hint = ""
    if source.endswith("server.json"):
        hint = " (is `gpupool up` still running on this machine?)"
    elif url.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
        hint = " (a server started with --tls-cert needs an https:// URL)"
    return ApiError(0, f"cannot reach the gpupool server at {url}: {reason}{hint}")


def _cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of ``kind`` in the chain of causes of ``exc`` (``exc`` included)."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, kind):
            return found
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else ""


def _problem(exc: ValueError) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc}: {first['msg']}" if loc else first["msg"]
    return _first_line(str(exc))
