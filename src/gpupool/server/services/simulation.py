"""Trace files in the data dir and simulation runs in the background (one at a time).

Runs live in memory: they are cheap to redo and are lost on a restart. A run uses one
worker process so that the control plane keeps its CPU.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gpupool.plugins.profiles import POLICIES
from gpupool.schemas.sim import SYNTHETIC, TRACE_NAME_PATTERN, SimRunCreate, SimRunView, TraceFile
from gpupool.server.services.errors import Invalid, NotFound
from gpupool.sim.study import StudySpec, run_study
from gpupool.sim.synthetic import synthetic_cluster, synthetic_pods
from gpupool.sim.trace import TraceError, load_nodes, load_pods

MAX_UPLOAD_BYTES = 64 << 20
_NAME = re.compile(TRACE_NAME_PATTERN)


def _kind(path: Path) -> str | None:
    with path.open() as handle:
        header = handle.readline().strip().split(",")
    if header[:1] == ["sn"]:
        return "nodes"
    if header[:1] == ["name"]:
        return "pods"
    return None


def list_traces(folder: Path) -> list[TraceFile]:
    out = []
    for path in sorted(folder.glob("*.csv")) if folder.exists() else []:
        kind = _kind(path)
        if kind is None:
            continue
        with path.open() as handle:
            rows = max(0, sum(1 for _ in handle) - 1)
        out.append(TraceFile(name=path.name, kind=kind, rows=rows,  # type: ignore[arg-type]
                             size_bytes=path.stat().st_size))
    return out


def save_trace(folder: Path, name: str, data: bytes) -> TraceFile:
    """Validate an uploaded node or pod list and store it; nothing is kept if it is bad."""
    if not _NAME.match(name):
        raise Invalid(f"name: {name!r} is not a file name ending in .csv")
    if len(data) > MAX_UPLOAD_BYTES:
        raise Invalid(f"body: the file is larger than {MAX_UPLOAD_BYTES >> 20} MiB")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{os.getpid()}.upload"
    tmp.write_bytes(data)
    try:
        kind = _kind(tmp)
        if kind is None:
            raise Invalid("body: not an openb node list (header sn,...) or pod list (name,...)")
        try:
            (load_nodes if kind == "nodes" else load_pods)(tmp)
        except TraceError as exc:
            raise Invalid(f"body: {str(exc).replace(str(tmp), name)}") from None
        except UnicodeDecodeError:
            raise Invalid("body: the file is not UTF-8 text") from None
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    return next(t for t in list_traces(folder) if t.name == name)


class SimulationRunner:
    """Queues simulation runs and executes them one at a time on a daemon thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._runs: dict[str, SimRunView] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queue: list[str] = []
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gpupool-sim", daemon=True)
        self._thread.start()

    def submit(self, body: SimRunCreate) -> SimRunView:
        for policy in body.policies:
            if policy not in POLICIES:
                raise Invalid(f"policies: unknown policy {policy!r}; one of {', '.join(POLICIES)}")
        if (body.nodes == SYNTHETIC) != (body.pods == SYNTHETIC):
            raise Invalid("nodes/pods: use 'synthetic' for both, or two trace files")
        for field, kind in (("nodes", "nodes"), ("pods", "pods")):
            name = getattr(body, field)
            if name != SYNTHETIC:
                path = self.folder / name
                if not _NAME.match(name) or not path.exists():
                    raise Invalid(f"{field}: no trace file {name!r} in the data dir")
                if _kind(path) != kind:
                    raise Invalid(f"{field}: {name!r} is not a {kind} list")
        with self._lock:
            run_id = str(next(self._ids))
            view = SimRunView(id=run_id, status="queued", request=body,
                              created_at=datetime.now(UTC),
                              runs_total=len(body.policies) * len(body.seeds), result=None)
            self._runs[run_id] = view
            self._queue.append(run_id)
        self._wake.set()
        return view

    def get(self, run_id: str) -> SimRunView:
        with self._lock:
            view = self._runs.get(run_id)
        if view is None:
            raise NotFound(f"no simulation run {run_id}")
        return view

    def list(self) -> list[SimRunView]:
        with self._lock:
            return [v.model_copy(update={"result": None}) for v in self._runs.values()][::-1]

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
        body = self._runs[run_id].request
        self._set(run_id, status="running")
        try:
            if body.nodes == SYNTHETIC:
                cluster = synthetic_cluster(0, body.scale)
                pods = synthetic_pods(0, cluster_gpus=sum(len(n.gpus) for n in cluster))
            else:
                cluster = load_nodes(self.folder / body.nodes)
                pods = load_pods(self.folder / body.pods)
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
