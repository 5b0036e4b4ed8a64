"""Trace files in the data dir and simulation runs in the background (one at a time).

Both belong to the team that made them: traces live in ``<traces>/<team id>/`` (a name is per
team, so two teams' ``x.csv`` never meet) and each run remembers its team. A user sees, reads
and replaces only their team's; what they may not see answers 404, as if it did not exist. An
admin sees every team's runs and traces; another team's trace is named ``<team id>/<name>``
in the admin's listing and may be used so in a run. Files left at the top of the folder by
older versions (before traces had owners) are no one's and are not shown.

An upload is streamed to a temporary file and refused (413) as soon as it passes
``MAX_UPLOAD_BYTES`` (or declares a larger ``Content-Length``), so the body is never held
whole; it is kept only once every row has been checked (``gpupool.sim.trace`` bounds every
size it parses).

Runs live in memory: they are cheap to redo and are lost on a restart. A run uses one
worker process so that the control plane keeps its CPU.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread

from gpupool.plugins.profiles import POLICIES
from gpupool.schemas.sim import SYNTHETIC, TRACE_NAME_PATTERN, SimRunCreate, SimRunView, TraceFile
from gpupool.server.services.errors import Invalid, NotFound, TooLarge
from gpupool.server.services.identity import Principal
from gpupool.sim.study import StudySpec, run_study
from gpupool.sim.synthetic import synthetic_cluster, synthetic_pods
from gpupool.sim.trace import TraceError, load_nodes, load_pods

MAX_UPLOAD_BYTES = 64 << 20
_NAME = re.compile(TRACE_NAME_PATTERN)


def _first_line(path: Path) -> str | None:
    """The start of the first line of ``path``; None when it is not UTF-8 text."""
    with path.open("rb") as handle:
        raw = handle.readline(4096)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _kind(path: Path) -> str | None:
    """"nodes" or "pods" by the first header cell; None for anything else (any bytes)."""
    first = _first_line(path) or ""
    return {"sn": "nodes", "name": "pods"}.get(first.split(",", 1)[0].strip())


def team_folder(folder: Path, team_id: int) -> Path:
    """Where the traces of team ``team_id`` are kept."""
    return folder / str(team_id)


def _describe(path: Path, name: str) -> TraceFile | None:
    kind = _kind(path)
    if kind is None:
        return None
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return TraceFile(name=name, kind=kind, rows=max(0, lines - 1),  # type: ignore[arg-type]
                     size_bytes=path.stat().st_size)


def list_traces(folder: Path, caller: Principal) -> list[TraceFile]:
    """The caller's team's traces; for an admin, every team's (others' as ``<team>/<name>``)."""
    teams = [caller.team_id]
    if caller.admin and folder.is_dir():
        teams += sorted(int(p.name) for p in folder.iterdir()
                        if p.is_dir() and p.name.isdigit() and int(p.name) != caller.team_id)
    out = []
    for team in teams:
        own = team_folder(folder, team)
        prefix = "" if team == caller.team_id else f"{team}/"
        for path in sorted(own.glob("*.csv")) if own.is_dir() else []:
            view = _describe(path, prefix + path.name)
            if view is not None:
                out.append(view)
    return out


def trace_path(folder: Path, caller: Principal, name: str) -> Path | None:
    """The file ``name`` stands for when ``caller`` says it (see ``list_traces``); None when
    the name is malformed or names another team's trace to a non-admin."""
    team, _, base = name.rpartition("/")
    if not _NAME.match(base):
        return None
    if not team:
        return team_folder(folder, caller.team_id) / base
    if caller.admin and team.isdigit() and team == str(int(team)):
        return team_folder(folder, int(team)) / base
    return None


def _too_large() -> TooLarge:
    return TooLarge(f"body: the file is larger than {MAX_UPLOAD_BYTES >> 20} MiB "
                    "(the upload limit); split the trace or upload a smaller sample")


async def upload_trace(folder: Path, caller: Principal, name: str, length: str | None,
                       body: AsyncIterator[bytes]) -> TraceFile:
    """Store an uploaded node or pod list as the caller's team's ``name`` (replacing the
    team's file of that name), streaming ``body`` to disk; nothing is kept when it is too
    large (TooLarge, 413, the moment it passes the limit), not a trace, or malformed (Invalid,
    422, naming the row and column). ``length`` is the request's Content-Length, if any."""
    if not _NAME.match(name):
        raise Invalid(f"name: {name!r} is not a file name ending in .csv")
    declared = int(length) if length and length.strip().isdigit() else 0
    if declared > MAX_UPLOAD_BYTES:
        raise _too_large()
    own = team_folder(folder, caller.team_id)
    own.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = own / f".{name}.{uuid.uuid4().hex}.upload"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            size = 0
            async for chunk in body:
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise _too_large()
                out.write(chunk)
        return await anyio.to_thread.run_sync(_keep, tmp, own / name)
    finally:
        tmp.unlink(missing_ok=True)


def _keep(tmp: Path, path: Path) -> TraceFile:
    """Check the upload ``tmp`` row by row and move it to ``path``."""
    kind = _kind(tmp)
    if kind is None and _first_line(tmp) is None:
        raise Invalid(f"body: {path.name}, row 1: not UTF-8 text; is this a CSV file?")
    if kind is None:
        raise Invalid("body: not an openb node list (header sn,...) or pod list (name,...)")
    try:
        (load_nodes if kind == "nodes" else load_pods)(tmp)
    except TraceError as exc:
        raise Invalid(f"body: {str(exc).replace(str(tmp), path.name)}") from None
    os.replace(tmp, path)
    view = _describe(path, path.name)
    assert view is not None
    return view


class SimulationRunner:
    """Queues simulation runs and executes them one at a time on a daemon thread. Each run
    belongs to the team of the user who started it (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._runs: dict[str, SimRunView] = {}
        self._teams: dict[str, int] = {}
        self._inputs: dict[str, tuple[Path, Path] | None] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queue: list[str] = []
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gpupool-sim", daemon=True)
        self._thread.start()

    def submit(self, caller: Principal, body: SimRunCreate) -> SimRunView:
        """Queue a run for the caller's team on traces the caller may see (Invalid else)."""
        for policy in body.policies:
            if policy not in POLICIES:
                raise Invalid(f"policies: unknown policy {policy!r}; one of {', '.join(POLICIES)}")
        if (body.nodes == SYNTHETIC) != (body.pods == SYNTHETIC):
            raise Invalid("nodes/pods: use 'synthetic' for both, or two trace files")
        paths: list[Path] = []
        for field, kind in (("nodes", "nodes"), ("pods", "pods")):
            name = getattr(body, field)
            if name != SYNTHETIC:
                path = trace_path(self.folder, caller, name)
                if path is None or not path.is_file():
                    raise Invalid(f"{field}: no trace file {name!r} in your team's traces "
                                  "(upload it with PUT /sim/traces/{name})")
                if _kind(path) != kind:
                    raise Invalid(f"{field}: {name!r} is not a {kind} list")
                paths.append(path)
        with self._lock:
            run_id = str(next(self._ids))
            view = SimRunView(id=run_id, status="queued", request=body,
                              created_at=datetime.now(UTC),
                              runs_total=len(body.policies) * len(body.seeds), result=None)
            self._runs[run_id] = view
            self._teams[run_id] = caller.team_id
            self._inputs[run_id] = (paths[0], paths[1]) if paths else None
            self._queue.append(run_id)
        self._wake.set()
        return view

    def _visible(self, caller: Principal, run_id: str) -> bool:
        return caller.admin or self._teams.get(run_id) == caller.team_id

    def get(self, caller: Principal, run_id: str) -> SimRunView:
        """The run with its result; NotFound when there is none the caller may see."""
        with self._lock:
            view = self._runs.get(run_id) if self._visible(caller, run_id) else None
        if view is None:
            raise NotFound(f"no simulation run {run_id}")
        return view

    def list(self, caller: Principal) -> list[SimRunView]:
        """The caller's team's runs (an admin: all), newest first, without results."""
        with self._lock:
            return [v.model_copy(update={"result": None}) for k, v in self._runs.items()
                    if self._visible(caller, k)][::-1]

    def _set(self, run_id: str, **changes: object) -> None:
        with self._lock:
            self._runs[run_id] = self._runs[run_id].model_copy(update=changes)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._queue:
                        break
                    run_id = self._queue.pop(0)
                self._execute(run_id)

    def _execute(self, run_id: str) -> None:
        with self._lock:
            body = self._runs[run_id].request
            inputs = self._inputs[run_id]
        self._set(run_id, status="running")
        try:
            if inputs is None:
                cluster = synthetic_cluster(0, body.scale)
                pods = synthetic_pods(0, cluster_gpus=sum(len(n.gpus) for n in cluster))
            else:
                cluster = load_nodes(inputs[0])
                pods = load_pods(inputs[1])
            spec = StudySpec(cluster, [p.request for p in pods], body.policies, body.seeds,
                             body.tune)
            done = itertools.count(1)
            progress: Callable[[object], None] = lambda _: self._set(  # noqa: E731
                run_id, runs_done=next(done))
            started = time.perf_counter()
            result = run_study(spec, workers=1, on_run_done=progress).to_json()
            result["meta"]["seconds"] = round(time.perf_counter() - started, 2)
            for policy in result["policies"].values():
                policy.pop("unallocated_gpu_pct_by_seed", None)
            self._set(run_id, status="done", result=result)
        except Exception as exc:  # a bad trace or a bug: report it on the run, keep serving
            self._set(run_id, status="failed", error=str(exc))
