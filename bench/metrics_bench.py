"""Scrape cost of ``GET /metrics`` (issue 19): 1,000 nodes of 8 A100 and 10,000 jobs, goal
≤ 200 ms per scrape.

The server is the middle tier's (tests/inprocess_api.py): the real FastAPI app and the real
Controller over a real database (SQLite by default; PostgreSQL at 127.0.0.1:5432/test too
where it answers), a fake inventory of ``--nodes`` nodes of ``--cards`` A100-80GB and the
scripted executor (nothing runs). Nothing of the scrape's state is constructed: the jobs
are submitted through ``services.jobs.submit`` (the API's submit minus HTTP) by users of 20
teams, the loop (``Controller.step``) places and launches them, so the GPU allocation the
scrape reports is the loop's own ``ClusterState``; the jobs meant to have succeeded ran and
ended (the executor says their processes exited 0); every team's quota is what its running
jobs hold, so the jobs submitted last wait for quota. Some running workloads are notebooks,
half of them marked idle (as the notebook watch marks them).

The app is then served by uvicorn on a loopback port (a thread of this process, as the
gateway is served) and scraped back to back with an admin Bearer token by an httpx client:
auth, collection, rendering and HTTP, the route's ``render`` timed inside each request, and
which scrapes a full (generation 2) garbage collection fell in. Then the parts are timed in
process with the collector paused: the GPU allocation (``LoopMetrics.gpu_allocation``), the
three database reads of ``metrics/books.py``, the whole collection (``registry.collect()``)
and ``generate_latest``. Last, the same scrapes once the heap is settled as a running
server settles it (``server/gc_settle.py``: ``gc.unfreeze(); gc.collect(); gc.freeze()``
five seconds after start-up and every ten minutes): the figures a running server gives.
Each database runs in a fresh process. Writes bench/results/metrics.md and .json.

    .venv/bin/python bench/metrics_bench.py                      # the figures (a few minutes)
    .venv/bin/python bench/metrics_bench.py --nodes 20 --jobs 200 --scrapes 5 --out /tmp/m.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from _common import REPO, RESULTS, machine, speed_probe
from metrics_bench_report import markdown

sys.path.insert(0, str(REPO / "tests"))
from gpupool.schemas.jobs import JobSpec, Kind, Phase
from gpupool.server import gc_settle
from gpupool.server.api import metrics_routes
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, User
from gpupool.server.gateway.serve import GatewayServer
from gpupool.server.metrics import books
from gpupool.server.metrics.collector import new_registry
from gpupool.server.services import jobs as job_service
from gpupool.server.services.identity import Principal
from server_harness import PG_DSN, PG_URL, postgres_available

if TYPE_CHECKING:
    from inprocess_api import InProcessServer

SHAPES = ((0.25, 12), (0.3, 5), (0.5, 18), (1, 40), (2, 15), (4, 7), (8, 3))
"""GPUs per job and how often (%): about 1.36 GPUs a job on average."""
SUCCEEDED, RUNNING = 0.30, 0.50
"""Shares of the jobs that end succeeded and that run; the rest wait (pending)."""
NOTEBOOKS = 0.06
"""Share of the running workloads that are notebooks (a quarter or half of a GPU)."""


def progress(label: str) -> Callable[[int, int], None]:
    """Prints ``label i/n`` at every tenth of the way, with the seconds so far."""
    started = time.perf_counter()
    shown = [-1]

    def tick(i: int, n: int) -> None:
        tenth = 10 * i // max(n, 1)
        if tenth != shown[0] and (tenth > shown[0] or i == n):
            shown[0] = tenth
            print(f"  {label}: {i:,}/{n:,} ({time.perf_counter() - started:.1f} s)",
                  flush=True)

    return tick


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[Database | None]:
    """None for SQLite (the harness makes its file); a fresh PostgreSQL schema, dropped
    afterwards."""
    if backend == "sqlite":
        yield None
        return
    import psycopg

    schema = "gp_bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    db = Database(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        db.migrate()
        yield db
    finally:
        db.dispose()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def settle(srv: InProcessServer, most: int = 20) -> None:
    """Step the loop until a step changes nothing running or pending."""
    for _ in range(most):
        before = (len(srv.controller.active), len(srv.controller.pending))
        srv.step(1)
        if (len(srv.controller.active), len(srv.controller.pending)) == before:
            return


def populate(srv: InProcessServer, jobs: int, teams: int, seed: int = 0) -> dict[str, Any]:
    """Teams, users and ``jobs`` workloads, run by the loop as the module's docstring says.
    Returns how many of each phase and kind the database holds."""
    rng = np.random.default_rng(seed)
    gpus, weights = zip(*SHAPES, strict=True)
    p = np.array(weights, float) / sum(weights)

    def shapes(n: int) -> list[float]:
        return [float(g) for g in rng.choice(gpus, size=n, p=p)]

    per_team = jobs // teams
    n_done, n_run = round(per_team * SUCCEEDED), round(per_team * RUNNING)
    n_wait = per_team - n_done - n_run
    plan = {f"team{t:02d}": (shapes(n_done), shapes(n_run), shapes(n_wait))
            for t in range(teams)}
    now = srv.clock.now
    principals: dict[str, Principal] = {}
    with srv.db.session() as s:
        for team, (done, run, _) in plan.items():
            # quota: room for the succeeded batch, then exactly the running batch's GPUs
            row = Team(name=team, quota_milli=round(1000 * max(sum(done), sum(run))),
                       borrow_limit_milli=0, created_at=now)
            s.add(row)
            s.flush()
            user = User(name=f"{team}-user", team_id=row.id, created_at=now, unix_user="root")
            s.add(user)
            s.flush()
            principals[team] = Principal(user.id, user.name, row.id, team, False)
    models = srv.controller.models

    def submit(batch: int, label: str) -> list[int]:
        ids: list[int] = []
        total = sum(len(plan[t][batch]) for t in plan)
        tick = progress(label)
        for team, shaped in plan.items():
            for g in shaped[batch]:
                notebook = batch == 1 and g < 1 and rng.random() < NOTEBOOKS / 0.35
                spec = (JobSpec(kind=Kind.NOTEBOOK, gpus=g) if notebook
                        else JobSpec(command=["sleep", "3600"], gpus=g))
                view = job_service.submit(srv.db, principals[team], spec, models, lambda: None)
                ids.append(int(view.id))
                tick(len(ids), total)
        return ids

    done_ids = submit(0, "submit the jobs that will succeed")
    settle(srv)
    for job_id in done_ids:  # their processes exit 0; the loop records the ends
        if job_id in srv.controller.active:
            srv.executor.end(job_id)
    settle(srv)
    with srv.db.session() as s:  # now each team's quota is its running batch's GPUs
        for team, (_, run, _) in plan.items():
            s.query(Team).filter(Team.name == team).update(
                {"quota_milli": round(1000 * sum(run))})
    submit(1, "submit the jobs that will run")
    settle(srv)
    submit(2, "submit the jobs that will wait")
    settle(srv)
    with srv.db.read() as s:
        rows = s.query(Job.id, Job.phase, Job.kind).all()
    running_notebooks = [i for i, phase, kind in rows
                         if phase == Phase.RUNNING.value and kind == Kind.NOTEBOOK.value]
    for job_id in running_notebooks[::2]:  # the notebook watch found half of them idle
        srv.controller.store.notebook_seen(job_id, {"host": "127.0.0.1", "port": 8888,
                                                    "idle_since": srv.clock.now})
    phases = Counter(f"{phase} {kind}" for _, phase, kind in rows)
    return {"jobs_in_db": len(rows), "by_phase_kind": dict(sorted(phases.items())),
            "idle_notebooks": len(running_notebooks[::2])}


def allocation(srv: InProcessServer) -> dict[str, Any]:
    """The GPUs as the scrape sees them (allocated share full, partial, none), and as the
    running jobs hold them (whole, or shares of one)."""
    shares = [share for *_, share in srv.controller.metrics.gpu_allocation()]
    held = [(a.node, g, a.gpu_milli) for active in srv.controller.active.values()
            for a in active.live.allocations for g in a.gpus]
    return {"gpus": len(shares), "full": sum(s == 1 for s in shares),
            "partial": sum(0 < s < 1 for s in shares), "free": sum(s == 0 for s in shares),
            "allocated_gpus": round(sum(shares), 2),
            "held_whole": len({(n, g) for n, g, m in held if m >= 1000}),
            "held_shared": len({(n, g) for n, g, m in held if m < 1000})}


def count_samples(text: str) -> tuple[dict[str, int], int]:
    """Samples by family, and the workloads the ``gpupool_jobs`` samples count."""
    families = list(text_string_to_metric_families(text))
    live = sum(int(x.value) for f in families if f.name == "gpupool_jobs" for x in f.samples)
    return {f.name: len(f.samples) for f in families}, live


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


class FullCollections:
    """When the garbage collector's full (generation 2) passes ran, while entered: (start,
    end) in ``time.perf_counter`` seconds."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._start = 0.0

    def _seen(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                self._start = time.perf_counter()
            else:
                self.spans.append((self._start, time.perf_counter()))

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._seen)


def measure(srv: InProcessServer, scrapes: int, warmup: int) -> dict[str, Any]:
    """``scrapes`` GET /metrics over loopback back to back (after ``warmup`` ones), noting
    which of them a full garbage collection fell in; then ``scrapes`` rounds of the parts,
    each timed on its own in process with the garbage collector paused."""
    loop, db = srv.controller.metrics, srv.db
    registry = new_registry(db, loop)  # the same registry the route makes on first use
    parts: dict[str, Callable[[], Any]] = {
        "gpu_allocation": loop.gpu_allocation,
        "db_team_gpus": lambda: books.team_gpus(db),
        "db_workload_counts": lambda: books.workload_counts(db),
        "db_idle_notebooks": lambda: books.idle_notebooks(db),
        "collect": lambda: list(registry.collect()),
        "generate_latest": lambda: generate_latest(registry),
    }
    times: dict[str, list[float]] = {k: [] for k in ["http", "render_in_request", *parts]}
    rendered: list[float] = []
    real_render = metrics_routes.render

    def render(registry: Any) -> bytes:  # the route's own call, timed inside the request
        ms, body = timed(lambda: real_render(registry))
        rendered.append(ms)
        return bytes(body)

    metrics_routes.render = render
    server = GatewayServer(srv.app)
    server.start("127.0.0.1", 0)
    answer = httpx.Response(0)
    windows: list[tuple[float, float]] = []
    try:
        with FullCollections() as full, httpx.Client(
                base_url=server.url, timeout=60,
                headers={"Authorization": f"Bearer {srv.token}"}) as client:
            tick = progress("scrapes")
            for i in range(warmup + scrapes):
                t0 = time.perf_counter()
                answer = client.get("/metrics")
                t1 = time.perf_counter()
                assert answer.status_code == 200, answer.text[:300]
                if i >= warmup:
                    windows.append((t0, t1))
                    times["http"].append((t1 - t0) * 1000)
                    times["render_in_request"].append(rendered[-1])
                    tick(i + 1 - warmup, scrapes)
            refused = client.get("/metrics", headers={"Authorization": "Bearer x"})
            assert refused.status_code == 401, refused.status_code
    finally:
        server.stop()
        metrics_routes.render = real_render
    times["http_rest"] = [a - b for a, b in zip(times["http"], times["render_in_request"],
                                                strict=True)]
    gc.collect()
    gc.disable()  # the parts' own cost: the collections' is in the scrapes' figures
    try:
        for i in range(warmup + scrapes):
            for name, fn in parts.items():
                ms = timed(fn)[0]
                if i >= warmup:
                    times[name].append(ms)
    finally:
        gc.enable()
    samples, live = count_samples(answer.text)
    hit = [any(a < end and b > start for a, b in full.spans) for start, end in windows]
    clean = [ms for ms, h in zip(times["http"], hit, strict=True) if not h]
    return {"ms": times, "bytes": len(answer.content), "samples": sum(samples.values()),
            "samples_by_family": samples, "live_jobs_scraped": live,
            "full_gc_ms": [(b - a) * 1000 for a, b in full.spans],
            "scrapes_with_full_gc": sum(hit),
            "http_without_full_gc": summary(clean) if clean else None}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": float(np.percentile(values, 90)),
            "max": max(values)}


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"{backend}: {args.nodes:,} nodes x {args.cards} GPUs, {args.jobs:,} jobs, "
          f"{args.teams} teams", flush=True)
    with tempfile.TemporaryDirectory() as tmp, database(backend, Path(tmp)) as db:
        with warnings.catch_warnings():  # starlette's TestClient on httpx: unused here
            warnings.simplefilter("ignore")
            from inprocess_api import InProcessServer
        t0 = time.perf_counter()
        srv = InProcessServer(Path(tmp), nodes=args.nodes, cards=args.cards, db=db,
                              cpu_milli=256_000, memory_mib=2_097_152)
        books_state = populate(srv, args.jobs, args.teams)
        setup_s = time.perf_counter() - t0
        print(f"  set up in {setup_s:.0f} s: {books_state['by_phase_kind']}", flush=True)
        held = allocation(srv)
        srv.executor.launched.clear()  # the scripted executor's record: no server keeps it
        gc.collect()
        tracked = len(gc.get_objects())
        load, probe = os.getloadavg()[0], speed_probe()
        got = measure(srv, args.scrapes, args.warmup)
        live = sum(n for k, n in books_state["by_phase_kind"].items()
                   if k.split()[0] in books.LIVE_PHASES)
        assert got["live_jobs_scraped"] == live, (got["live_jobs_scraped"], live)
        print("  again, with the heap settled as the server settles it (gc_settle)", flush=True)
        gc_settle.settle()
        try:
            frozen = measure(srv, args.scrapes, args.warmup)
        finally:
            gc.unfreeze()
        srv.db.dispose()
    result = {"backend": backend, "setup_s": setup_s, **books_state, "gc_objects": tracked,
              "allocation": held, **got, "load_before": load,
              "probe_ms_before": probe, "load_after": os.getloadavg()[0],
              "probe_ms_after": speed_probe()}
    result["summary"] = {k: summary(v) for k, v in got["ms"].items()}
    result["frozen"] = {"http": summary(frozen["ms"]["http"]),
                        "full_gc_ms": frozen["full_gc_ms"],
                        "scrapes_with_full_gc": frozen["scrapes_with_full_gc"]}
    http = result["summary"]["http"]
    cold = result["frozen"]["http"]
    print(f"  GET /metrics: median {http['median']:.1f} ms, p90 {http['p90']:.1f}, "
          f"max {http['max']:.1f} ({got['scrapes_with_full_gc']} with a full collection); "
          f"{result['bytes']:,} bytes, {result['samples']:,} samples; frozen: median "
          f"{cold['median']:.1f}, p90 {cold['p90']:.1f}, max {cold['max']:.1f}", flush=True)
    return result



def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--cards", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgres"],
                        choices=["sqlite", "postgres"])
    parser.add_argument("--out", default=str(RESULTS / "metrics.md"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one backend, its result as JSON to the path given
        Path(args.one).write_text(json.dumps(run_backend(args.backend[0], args)))
        return
    data: dict[str, Any] = {"machine": machine(), **{k: getattr(args, k) for k in (
        "nodes", "cards", "jobs", "teams", "scrapes", "warmup")}, "backends": []}
    for backend in args.backend:
        if backend == "postgres" and (why := postgres_available()):
            print(f"postgres skipped: {why}")
            data["postgres_skipped"] = why
            continue
        # each backend in a fresh process: the heap one leaves would slow the next one's
        # garbage collections
        with tempfile.NamedTemporaryFile(suffix=".json") as one:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--backend", backend,
                            "--one", one.name], check=True)
            data["backends"].append(json.loads(Path(one.name).read_text()))
    out = Path(args.out)
    out.write_text(markdown(data))
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"written to {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
