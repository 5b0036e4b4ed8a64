"""Side by side with Slurm (issue 14): a one-node Slurm of Debian's ``slurm-wlm`` with 4 GPU
gres (bench/slurm_cluster.py) and a real ``gpupool up`` with 4 fake GPUs, one after the
other on this machine, each measured the same way:

1. burst: ``--jobs`` one-GPU ``true`` jobs submitted by ``--clients`` client processes
   (gpupool: the SDK's ``Client.submit``; Slurm: ``sbatch --wrap=true --gres=gpu:1``) while
   the jobs already launch: accepted submits/s (jobs / first submit to last accepted) and
   the time from the first submit until all of them finished;
2. latency: ``--latency-samples`` jobs one after another (submit, poll every 10 ms until it
   runs or has run, next): submit→running p50 / p99;
3. gpupool only, to say what bounds its accept rate: the CPU each party used during the
   burst, the same burst into a queue without quota (nothing launches), the server's CPU
   per request one at a time, and (with py-spy) a profile of the server during a burst (a
   separate run: sampling costs CPU).

Each ``--slurm-config`` (SchedulerParameters, '' for Slurm's defaults) and each
``--gpupool-tick`` is a column; by default one each, the defaults. Slurm is skipped, with
the reason and the apt command, where it is not installed (the bench never installs
anything). Writes bench/results/slurm.md and bench/results/slurm.json. With the issue's
numbers (the defaults) a run takes about 26 minutes, 21 of them Slurm's (its defaults start
batch jobs every 3 s); the results were made with both variants of each (33 minutes):

    .venv/bin/python bench/slurm_compare.py
    .venv/bin/python bench/slurm_compare.py --slurm-config '' \
        --slurm-config batch_sched_delay=0 --gpupool-tick 0.5 --gpupool-tick 0.2
    .venv/bin/python bench/slurm_compare.py --jobs 100 --latency-samples 20 --no-slurm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import RESULTS, machine, parked_token
from slurm_cluster import APT, SlurmCluster, missing, one_node_slurm, proc_cpu_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server_harness import Server, make_server

POLL_S = 0.010  # latency polling, both systems
FINISH_POLL_S = 0.25  # "all finished" polling, both systems
LATENCY_GIVE_UP_S = 120
DEFAULT_TICK = 0.5  # gpupool up's --tick
SPEC = {"command": ["true"], "gpus": 1}
SBATCH = ("sbatch", "--parsable", "--wrap=true", "--gres=gpu:1", "-o", "/dev/null",
          "-J", "bench")
GP_STARTED = {"running", "succeeded", "failed"}
SLURM_NOT_STARTED = {"PENDING", "CONFIGURING"}


# ---------------------------------------------------------------- machine and quiet check


def load() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float, max_wait_s: float) -> dict[str, float]:
    """Wait (up to ``max_wait_s``) until the 1-minute load is at most ``max_load``: other
    work on this machine shares its cores. Returns the load seen and how long we waited."""
    started = time.monotonic()
    while load() > max_load and time.monotonic() - started < max_wait_s:
        print(f"load {load():.2f} > {max_load}: waiting", flush=True)
        time.sleep(15)
    return {"load_1min": round(load(), 2), "waited_s": round(time.monotonic() - started, 1)}


def busy_core_seconds() -> float:
    """Core-seconds the whole machine has spent not idle (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> float:
    """cutime + cstime: CPU of the children ``pid`` has reaped (its launched processes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the burst, both systems


@dataclass
class Burst:
    first_s: float  # wall clock of the first submit
    last_s: float  # wall clock when the last submit was accepted
    ids: list[str]
    client_cpu_s: float  # the client processes, with their children (sbatch)
    busy_core_s: float  # the whole machine during the burst

    @property
    def rate(self) -> float:
        return len(self.ids) / (self.last_s - self.first_s)


Worker = Callable[[int], list[str]]


def _own_cpu_seconds() -> float:
    """This process's CPU with that of the children it reaped (sbatch)."""
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _client_process(make: Callable[[], Worker], count: int, barrier: Any, out: Any) -> None:
    try:
        submit_all = make()  # connect, import, warm up: before the start line
        barrier.wait()
        cpu0 = _own_cpu_seconds()
        first = time.time()
        ids = submit_all(count)
        last = time.time()
        out.put(("ok", first, last, ids, _own_cpu_seconds() - cpu0))
    except BaseException as exc:  # reported to the parent, which fails the run
        with contextlib.suppress(Exception):
            barrier.abort()
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def burst(make: Callable[[], Worker], jobs: int, clients: int) -> Burst:
    """Start ``clients`` processes (forked: each inherits ``make``), let them go at once,
    and collect what each submitted."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    out = ctx.Queue()
    shares = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]
    procs = [ctx.Process(target=_client_process, args=(make, n, barrier, out)) for n in shares]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        busy0 = busy_core_seconds()
        results = [out.get(timeout=1800) for _ in procs]
        busy1 = busy_core_seconds()
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [r[1] for r in results if r[0] == "error"]
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    return Burst(
        first_s=min(r[1] for r in results),
        last_s=max(r[2] for r in results),
        ids=[i for r in results for i in r[3]],
        client_cpu_s=sum(r[4] for r in results),
        busy_core_s=busy1 - busy0,
    )


def wait_all_finished(active: Callable[[], int], first_s: float,
                      timeout_s: float) -> float | None:
    """Seconds from the first submit until ``active()`` is 0 (None: not within timeout)."""
    while time.time() - first_s < timeout_s:
        if active() == 0:
            return time.time() - first_s
        time.sleep(FINISH_POLL_S)
    return None


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {}
    return {"p50_ms": round(statistics.median(samples_ms), 1),
            "p99_ms": round(float(np.percentile(samples_ms, 99)), 1),
            "max_ms": round(max(samples_ms), 1), "n": len(samples_ms)}


# ---------------------------------------------------------------- gpupool


def gp_submitter(url: str, token: str) -> Callable[[], Worker]:
    def make() -> Worker:
        from gpupool.sdk import Client

        client = Client(url, token)
        client.whoami()  # the connection is open before the start line

        def submit_all(count: int) -> list[str]:
            ids = [client.submit(SPEC).id for _ in range(count)]
            client.close()
            return ids

        return submit_all

    return make


@contextlib.contextmanager
def gpupool_server(gpus: int, tick: float) -> Iterator[Server]:
    """``gpupool up`` on SQLite with ``gpus`` fake A100s and ``--tick`` (tests/
    server_harness.py's Server: the admin's jobs run as root without the sandbox); torn
    down on the way out."""
    with tempfile.TemporaryDirectory() as tmp:
        # the harness passes --tick 0.2 first; the last --tick given wins
        yield from make_server("sqlite", Path(tmp), f"{gpus}xA100-80GB",
                               extra_args=("--tick", f"{tick:g}"))


def gpupool_label(tick: float) -> str:
    return f"gpupool, --tick {tick:g}" + (" (default)" if tick == DEFAULT_TICK else "")


def gp_active(server: Server) -> Callable[[], int]:
    from gpupool.sdk import Client

    client = Client(server.url, server.token)
    return lambda: sum(q.pending + q.running for q in client.queues())


def gp_timeline(views: list[Any], burst_end_s: float) -> dict[str, Any]:
    """From the burst's jobs' events: how fast jobs were launched during and after the
    burst, and the gaps between phases (server clock)."""
    firsts = []
    for view in views:
        at: dict[str, float] = {}
        for e in view.events:
            at.setdefault(e.phase.value, e.at.timestamp())
        firsts.append(at)
    running = sorted(a["running"] for a in firsts if "running" in a)
    ended = [a.get("succeeded", a.get("failed")) for a in firsts]
    during = [t for t in running if t <= burst_end_s]
    after = [t for t in running if t > burst_end_s]
    return {
        "launched_during_burst": len(during),
        "launches_per_s_after_burst": round(len(after) / (after[-1] - burst_end_s), 1)
        if after else None,
        "starting_to_running_ms": percentiles(
            [(a["running"] - a["starting"]) * 1000 for a in firsts
             if "running" in a and "starting" in a]),
        "running_to_ended_ms": percentiles(
            [(e - a["running"]) * 1000 for a, e in zip(firsts, ended, strict=True)
             if "running" in a and e is not None]),
    }


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's main thread (the server's event loop) and of all its
    other threads (the controller loop, the pipeline engine, worker threads)."""
    main = others = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            if task.name == str(pid):
                main += cpu
            else:
                others += cpu
    return main, others


def submit_costs(server: Server, token: str, n: int) -> dict[str, dict[str, float]]:
    """One client, one request at a time into a queue without quota: wall time, this
    process's CPU and the server's CPU per request (event-loop thread, other threads),
    submits through the SDK and as bare HTTP, and GET /whoami as the HTTP floor."""
    from gpupool.sdk import Client

    pid = server.proc.pid if server.proc else 0
    found: dict[str, dict[str, float]] = {}
    with Client(server.url, token) as sdk, httpx.Client(
        base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}
    ) as bare:
        calls: dict[str, Callable[[], object]] = {
            "SDK Client.submit": lambda: sdk.submit(SPEC),
            "httpx POST /jobs, Idempotency-Key": lambda: bare.post(
                "/jobs", json=SPEC, headers={"Idempotency-Key": str(uuid.uuid4())}
            ).raise_for_status(),
            "httpx POST /jobs, no key": lambda: bare.post("/jobs", json=SPEC)
            .raise_for_status(),
            "httpx GET /whoami (HTTP floor)": lambda: bare.get("/whoami").raise_for_status(),
        }
        for name, call in calls.items():
            call()
            t0, c0, (m0, o0) = time.perf_counter(), time.process_time(), thread_cpu_seconds(pid)
            for _ in range(n):
                call()
            t1, c1, (m1, o1) = time.perf_counter(), time.process_time(), thread_cpu_seconds(pid)
            found[name] = {"wall_ms": round((t1 - t0) * 1000 / n, 2),
                           "client_cpu_ms": round((c1 - c0) * 1000 / n, 2),
                           "server_cpu_ms": round((m1 - m0 + o1 - o0) * 1000 / n, 2),
                           "server_event_loop_ms": round((m1 - m0) * 1000 / n, 2),
                           "server_other_threads_ms": round((o1 - o0) * 1000 / n, 2)}
    return found


def measure_gpupool(args: argparse.Namespace, tick: float, extras: bool) -> dict[str, Any]:
    """Burst, all finished, latency; with ``extras`` also the burst into a queue without
    quota and the one-at-a-time costs."""
    from gpupool.sdk import Client

    label = gpupool_label(tick)
    with gpupool_server(args.gpus, tick) as server:
        pid = server.proc.pid if server.proc else 0
        admin = Client(server.url, server.token)
        quota = {q.name: q.quota_gpus for q in admin.queues()}
        print(f"{label}: server up, queues {quota}; burst of {args.jobs}", flush=True)
        load0 = load()
        cpu0, kids0 = proc_cpu_seconds(pid), children_cpu_seconds(pid)
        b = burst(gp_submitter(server.url, server.token), args.jobs, args.clients)
        cpu1, kids1 = proc_cpu_seconds(pid), children_cpu_seconds(pid)
        print(f"{label}: {b.rate:.0f} accepted/s; waiting until all finished", flush=True)
        finished = wait_all_finished(gp_active(server), b.first_s, args.finish_timeout)
        cpu_done, kids_done = proc_cpu_seconds(pid), children_cpu_seconds(pid)
        views = [admin.job(i) for i in b.ids]
        outcomes = Counter(v.phase.value for v in views)
        timeline = gp_timeline(views, b.last_s)
        print(f"{label}: all finished after {finished} s: {dict(outcomes)}", flush=True)
        latency, by_event = [], []
        for _ in range(args.latency_samples):
            t0, w0 = time.perf_counter(), time.time()
            job_id = admin.submit(SPEC).id
            while True:
                view = admin.job(job_id)
                if view.phase.value in GP_STARTED:
                    latency.append((time.perf_counter() - t0) * 1000)
                    at = [e.at for e in view.events if e.phase.value == "running"]
                    if at:
                        by_event.append((at[0].timestamp() - w0) * 1000)
                    break
                time.sleep(POLL_S)
        print(f"{label}: latency {percentiles(latency)}", flush=True)
        extra: dict[str, Any] = {}
        if extras:
            token = parked_token(server)
            cpu2 = proc_cpu_seconds(pid)
            parked = burst(gp_submitter(server.url, token), args.jobs, args.clients)
            cpu3 = proc_cpu_seconds(pid)
            print(f"{label}: {parked.rate:.0f} accepted/s into a queue without quota",
                  flush=True)
            extra = {
                "parked_accepted_per_s": round(parked.rate, 1),
                "parked_cpu_s": {"server": round(cpu3 - cpu2, 2),
                                 "clients": round(parked.client_cpu_s, 2),
                                 "machine_busy": round(parked.busy_core_s, 2),
                                 "burst_s": round(parked.last_s - parked.first_s, 2)},
                "submit_costs": submit_costs(server, token, args.cost_samples),
            }
            print(f"{label}: one request at a time: {extra['submit_costs']}", flush=True)
        admin.close()
    return {
        "label": label,
        "server": f"gpupool up, SQLite, --fake-gpus {args.gpus}xA100-80GB, --tick {tick:g}",
        "load_1min_at_start": round(load0, 2),
        "jobs": len(b.ids),
        "accepted_per_s": round(b.rate, 1),
        "submit_burst_s": round(b.last_s - b.first_s, 2),
        "all_finished_s": None if finished is None else round(finished, 1),
        "outcomes": dict(outcomes),
        "latency_observed": percentiles(latency),
        "latency_running_event": percentiles(by_event),
        "burst_timeline": timeline,
        "burst_cpu_s": {
            "server": round(cpu1 - cpu0, 2),
            "server_reaped_children": round(kids1 - kids0, 2),
            "clients": round(b.client_cpu_s, 2),
            "machine_busy": round(b.busy_core_s, 2),
            "machine_capacity": round((b.last_s - b.first_s) * (os.cpu_count() or 1), 2),
        },
        "run_cpu_s": {  # from the first submit until all had finished
            "server": round(cpu_done - cpu0, 2),
            "server_reaped_children": round(kids_done - kids0, 2),
        },
        **extra,
    }


# ---------------------------------------------------------------- Slurm


def slurm_submitter(env: dict[str, str]) -> Callable[[], Worker]:
    def make() -> Worker:
        def submit_all(count: int) -> list[str]:
            ids = []
            for _ in range(count):
                done = subprocess.run(SBATCH, env=env, capture_output=True, text=True,
                                      check=True)
                ids.append(done.stdout.strip().split(";")[0])
            return ids

        return submit_all

    return make


def slurm_state(cluster: SlurmCluster, job_id: str) -> str:
    out = subprocess.run(("squeue", "-h", "-j", job_id, "-o", "%T"), env=cluster.env,
                         capture_output=True, text=True, check=False)
    # a job purged from slurmctld's memory (MinJobAge) has finished long ago
    return out.stdout.strip() or "GONE"


def slurm_outcomes(cluster: SlurmCluster, ids: list[str]) -> dict[str, int]:
    """JobState of each job from jobcomp/filetxt (no accounting database needed)."""
    wanted = set(ids)
    states: dict[str, str] = {}
    if cluster.jobcomp.is_file():
        for line in cluster.jobcomp.read_text().splitlines():
            m = re.match(r"JobId=(\d+) .*?JobState=(\S+)", line)
            if m and m.group(1) in wanted:
                states[m.group(1)] = m.group(2).lower()
    counts = Counter(states.values())
    if len(states) < len(wanted):
        counts["not in jobcomp"] = len(wanted) - len(states)
    return dict(counts)


def slurm_label(params: str) -> str:
    return f"Slurm, {params}" if params else "Slurm, defaults"


def measure_slurm(args: argparse.Namespace, params: str) -> dict[str, Any]:
    """One Slurm, ``params`` its SchedulerParameters ("" for Slurm's defaults)."""
    label = slurm_label(params)
    with one_node_slurm(args.gpus, params) as cluster:
        version = cluster.version()
        print(f"{label}: {version} up ({cluster.network_note}); burst of {args.jobs}",
              flush=True)
        load0 = load()
        cpu0 = cluster.cpu_seconds()
        b = burst(slurm_submitter(cluster.env), args.jobs, args.clients)
        cpu1 = cluster.cpu_seconds()
        print(f"{label}: {b.rate:.0f} accepted/s; waiting until all finished", flush=True)
        finished = wait_all_finished(cluster.active_jobs, b.first_s, args.finish_timeout)
        outcomes = slurm_outcomes(cluster, b.ids)
        print(f"{label}: all finished after {finished} s: {outcomes}", flush=True)
        if finished is None:
            cluster.cmd("scancel", "--quiet", "--partition=bench", check=False)
            wait_all_finished(cluster.active_jobs, time.time(), 120)
        latency, stuck = [], 0
        for _ in range(args.latency_samples):
            t0 = time.perf_counter()
            done = subprocess.run(SBATCH, env=cluster.env, capture_output=True, text=True,
                                  check=True)
            job_id = done.stdout.strip().split(";")[0]
            while slurm_state(cluster, job_id) in SLURM_NOT_STARTED:
                if time.perf_counter() - t0 > LATENCY_GIVE_UP_S:
                    stuck += 1
                    break
                time.sleep(POLL_S)
            else:
                latency.append((time.perf_counter() - t0) * 1000)
        print(f"{label}: latency {percentiles(latency)}", flush=True)
        squeue_ms = []
        for _ in range(20):
            t0 = time.perf_counter()
            slurm_state(cluster, b.ids[0])
            squeue_ms.append((time.perf_counter() - t0) * 1000)
        return {
            "label": label,
            "scheduler_parameters": params or "(Slurm's defaults)",
            "version": version,
            "network": cluster.network_note,
            "node": f"{cluster.node}: CPUs={cluster.cpus} Gres=gpu:{cluster.gpus}",
            "load_1min_at_start": round(load0, 2),
            "jobs": len(b.ids),
            "accepted_per_s": round(b.rate, 1),
            "submit_burst_s": round(b.last_s - b.first_s, 2),
            "all_finished_s": None if finished is None else round(finished, 1),
            "outcomes": outcomes,
            "latency_observed": percentiles(latency),
            "latency_not_running_after_120_s": stuck,
            "squeue_call_ms": round(statistics.median(squeue_ms), 1),
            "burst_cpu_s": {
                **{k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
                "clients_with_sbatch": round(b.client_cpu_s, 2),
                "machine_busy": round(b.busy_core_s, 2),
                "machine_capacity": round((b.last_s - b.first_s) * (os.cpu_count() or 1), 2),
            },
        }


# ---------------------------------------------------------------- profile of the server


CATEGORIES = (  # innermost match wins: (category, pattern on "function (file:line)")
    ("SQLite / SQLAlchemy", r"sqlalchemy/|sqlite3"),
    ("pydantic", r"pydantic"),
    ("JSON", r"/json/"),
    ("process launch", r"subprocess\.py|os>.*fork|shutil\.py|tempfile\.py"),
    ("files", r"pathlib\.py|<frozen os>"),
    ("uvicorn / h11", r"uvicorn/|h11/|httptools"),
    ("FastAPI / Starlette / anyio", r"fastapi/|starlette/|anyio/"),
    ("socket send (loopback TCP, in the kernel)", r"SocketTransport\.write "),
    ("asyncio", r"asyncio/|selectors\.py"),
    ("logging", r"logging/"),
    ("gpupool", r"gpupool/"),
)
THREADS = (  # py-spy --threads names the thread in the first frame
    ("gpupool-loop", "controller loop"),
    ("MainThread", "event loop (HTTP; SQLite submits run here)"),
    ("AnyIO worker", "worker threads (sync routes: GET /queues, /jobs/ID)"),
    ("gpupool-pipelines", "pipeline engine"),
)
IDLE = re.compile(r"^(Condition\.wait|Event\.wait|\w*Selector\.select|Thread\.join|"
                  r"Queue\.get|_wait_for_tstate_lock|sleep) ")
LOCK_WAIT = re.compile(r"Database\.session \(.*database\.py:\d+\)")
"""A sample ending in Database.session's ``with`` line, entered from its __enter__ (no
frame below): blocked acquiring the in-process SQLite write lock (C, no Python frame)."""
WRAPPERS = re.compile(r"gpupool/(cli/|server/db/database\.py|server/api/hostile\.py)")


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Per thread: its share of the samples, the libraries its time ends in (innermost
    match) and the gpupool functions it is in (innermost, wrappers skipped); from py-spy's
    raw output with --threads. Samples of a thread waiting (a wait, a select, a sleep the
    sampler took for active) are dropped."""
    threads: Counter[str] = Counter()
    libraries: dict[str, Counter[str]] = {}
    functions: dict[str, Counter[str]] = {}
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if IDLE.match(frames[-1].strip()):
            idle += count
            continue
        total += count
        name = frames[0].split(": ", 1)[-1]
        thread = next((label for key, label in THREADS if name.startswith(key)),
                      "other threads")
        threads[thread] += count
        category = "other"
        if LOCK_WAIT.match(frames[-1]) and "__enter__" in frames[-2]:
            category = "waiting for the SQLite write lock"
        for frame in reversed(frames[1:] if category == "other" else []):
            hit = next((c for c, pattern in CATEGORIES if re.search(pattern, frame)), None)
            if hit:
                category = hit
                break
        libraries.setdefault(thread, Counter())[category] += count
        gp = [f for f in frames if "gpupool/" in f and not WRAPPERS.search(f)]
        where = _short(gp[-1]) if gp else "(framework only)"
        functions.setdefault(thread, Counter())[where] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "threads": [
            {"thread": t, "pct": pct(n),
             "libraries": [(k, pct(v)) for k, v in libraries[t].most_common(5)],
             "functions": [(k, pct(v)) for k, v in functions[t].most_common(5)]}
            for t, n in threads.most_common()
        ],
    }


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((?:.*/)?gpupool/([^:]+?)(?:\.py)?(?::\d+)?\)", frame)
    return f"{m.group(2)}:{m.group(1)}" if m else frame


def profile_gpupool(args: argparse.Namespace, py_spy: str, tick: float) -> dict[str, Any]:
    with gpupool_server(args.gpus, tick) as server, tempfile.TemporaryDirectory() as tmp:
        pid = server.proc.pid if server.proc else 0
        raw = Path(tmp) / "profile.txt"
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", str(args.profile_rate),
             "--format", "raw", "--threads", "--nonblocking", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(2)
        try:
            b = burst(gp_submitter(server.url, server.token), args.jobs, args.clients)
        finally:
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=60)
        if not raw.is_file():
            return {"skipped": f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"}
        summary = summarize_profile(raw)
        if args.keep_profile:
            shutil.copy(raw, args.keep_profile)
        return {"rate_hz": args.profile_rate, "accepted_per_s_while_profiled": round(b.rate, 1),
                **summary}


# ---------------------------------------------------------------- report


def versions() -> dict[str, str]:
    found = {"gpupool": metadata.version("gpupool"), "python": platform.python_version()}
    for prog, flag in (("slurmctld", "-V"), ("munged", "--version")):
        if shutil.which(prog):
            out = subprocess.run([prog, flag], capture_output=True, text=True, check=False)
            found[prog] = (out.stdout or out.stderr).strip().splitlines()[0]
    with contextlib.suppress(OSError):
        found["os"] = "Debian " + Path("/etc/debian_version").read_text().strip()
    found["kernel"] = platform.release()
    return found


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def _measured(side: dict[str, Any]) -> bool:
    return "accepted_per_s" in side


def table(sides: list[dict[str, Any]],
          rows: list[tuple[str, Callable[[dict[str, Any]], Any], int]]) -> list[str]:
    """One column per system; a cell says "not measured" where a side was skipped."""
    lines = ["| | " + " | ".join(s.get("label", "?") for s in sides) + " |",
             "|---" * (len(sides) + 1) + "|"]
    for label, key, digits in rows:
        cells = [_fmt(key(s), "", digits) if _measured(s) else "not measured" for s in sides]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


MAIN_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], int]] = [
    ("accepted submits / s (8 clients, jobs launching)", lambda s: s["accepted_per_s"], 0),
    ("time until all finished (s)", lambda s: s["all_finished_s"], 1),
    ("outcomes", lambda s: ", ".join(f"{k} {v}" for k, v in s["outcomes"].items()), 0),
    ("submit→running p50 (ms)", lambda s: s["latency_observed"].get("p50_ms"), 1),
    ("submit→running p99 (ms)", lambda s: s["latency_observed"].get("p99_ms"), 1),
    ("load (1 min) when it started", lambda s: s["load_1min_at_start"], 2),
]


def _ms(side: dict[str, Any], key: str, pct: str) -> Any:
    return side.get(key, {}).get(pct)


DETAIL_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], int]] = [
    ("submit→`running` event, server clock, p50 / p99 (ms)",
     lambda s: f"{_ms(s, 'latency_running_event', 'p50_ms')} / "
               f"{_ms(s, 'latency_running_event', 'p99_ms')}", 0),
    ("burst: seconds of submits / jobs started meanwhile",
     lambda s: f"{s['submit_burst_s']} / {s['burst_timeline']['launched_during_burst']}", 0),
    ("starts / s after the burst", lambda s: s["burst_timeline"]["launches_per_s_after_burst"],
     1),
    ("starting→running p50 (ms)",
     lambda s: s["burst_timeline"]["starting_to_running_ms"].get("p50_ms"), 1),
    ("running→ended of a `true` job, p50 / p99 (ms)",
     lambda s: f"{s['burst_timeline']['running_to_ended_ms'].get('p50_ms')} / "
               f"{s['burst_timeline']['running_to_ended_ms'].get('p99_ms')}", 0),
    ("server CPU per job, first submit → all finished (ms)",
     lambda s: 1000 * s["run_cpu_s"]["server"] / s["jobs"], 1),
    ("jobs' processes (shims) CPU per job (ms)",
     lambda s: 1000 * s["run_cpu_s"]["server_reaped_children"] / s["jobs"], 1),
]


def write_report(out_md: Path, out_json: Path, data: dict[str, Any]) -> None:
    out_json.write_text(json.dumps(data, indent=2, default=str) + "\n")
    slurms, gps, prof = data["slurm"], data["gpupool"], data.get("profile", {})
    first: dict[str, Any] = next((s for s in slurms if _measured(s)), {})
    extras: dict[str, Any] = next((g for g in gps if "submit_costs" in g), {})
    a = data["args"]
    lines = [
        "# gpupool side by side with Slurm",
        "",
        f"Generated by `bench/slurm_compare.py` on {data['date']}: {data['machine']}; "
        + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ". "
        f"The run took {data['run_minutes']:.0f} min: `{command_line(a)}`.",
        f"Load (1 min) before the run: {data['quiet']['load_1min']} "
        f"(waited {data['quiet']['waited_s']} s for ≤ {a['max_load']}); other work shares "
        "this machine, so the load each side started at is in the table.",
        "",
        "## Method",
        "",
        f"One system at a time on the same machine, each with one node of {a['gpus']} GPUs "
        "and nothing else queued on it; each in its default configuration and in one "
        "tuned for this workload:",
        "",
        "- **Slurm**: Debian's `slurm-wlm`, a throwaway one-node cluster made by "
        "`bench/slurm_cluster.py`: munged with its own key, slurmctld and slurmd in the "
        "foreground as root; `select/cons_tres` (CR_Core), `sched/backfill`, "
        "`proctrack/linuxproc`, `task/none`, no accounting database, `jobcomp/filetxt` for "
        "the outcomes. `Gres=gpu:4` with gres.conf `File=` four links to /dev/null (22.05 "
        "drops a GPU without `File=`, and it must be a character device); `CPUs=4` declared "
        "(`SlurmdParameters=config_overrides`) since a Slurm job takes a core at least while "
        "a gpupool job of this spec asks none: the GPUs bound concurrency on both sides. "
        f"Network: {first.get('network', '—')}. Jobs: `{' '.join(SBATCH)}`. "
        "SchedulerParameters: Slurm's defaults, and `batch_sched_delay=0` (by default "
        "Slurm delays scheduling batch jobs by up to 3 s, which paces this whole workload).",
        f"- **gpupool**: `gpupool up` on SQLite with `--fake-gpus {a['gpus']}xA100-80GB` "
        "(tests/server_harness.py's Server: the admin's jobs run as root without the "
        "sandbox), `--tick` 0.5 s (the default: how often the loop looks at running jobs "
        "when no request wakes it) and 0.2 s (the test harness's); jobs "
        f"`{json.dumps(SPEC)}` through the SDK (`gpupool.sdk.Client.submit`: it validates "
        "the spec with pydantic, sends an Idempotency-Key and parses the answer into a "
        "JobView) as the admin, whose default team's quota is the pool's 4 GPUs.",
        f"- **Burst**: {a['jobs']:,} jobs from {a['clients']} client processes (forked, "
        "connected, then released together); accepted submits/s = jobs / (last accepted − "
        "first submit), wall clock across processes. All finished: from the first submit "
        "until nothing is pending or running (Slurm: `squeue -t pending,running,...` "
        "empty, COMPLETING counts as not finished; gpupool: `GET /queues` pending + "
        f"running = 0), polled every {FINISH_POLL_S * 1000:.0f} ms on both.",
        f"- **Latency**: {a['latency_samples']} jobs one after another, each from just before "
        "the submit until a poll sees it running or past it (a `true` job may end between "
        f"two polls); polls every {POLL_S * 1000:.0f} ms on both (gpupool: `GET /jobs/ID` "
        "through the SDK, a few ms; Slurm: `squeue -h -j ID -o %T`, "
        f"{_fmt(first.get('squeue_call_ms'), ' ms', 1)} a call, a process each), so the "
        "resolution is the interval plus one query. For gpupool the server's own `running` "
        "event time is also given (no polling error).",
        "",
        "## Results",
        "",
        *table([*slurms, *gps], MAIN_ROWS),
        "",
    ]
    for s in [*slurms, *gps]:
        if not _measured(s):
            why = s.get("skipped") or s.get("error")
            lines += [f"{s.get('label', '?')} not measured: {why}", ""]
    if any(_measured(g) for g in gps):
        lines += ["### gpupool in detail (server events and CPU)", "",
                  *table(gps, DETAIL_ROWS), ""]
        lines += cpu_section([s for s in slurms if _measured(s)],
                             [g for g in gps if _measured(g)], extras, a["clients"])
    if extras.get("submit_costs"):
        lines += [
            f"### One request at a time ({extras['label']}; one client, {a['cost_samples']} "
            "each, into a queue without quota): per request",
            "",
            "| | wall (ms) | client CPU (ms) | server CPU (ms) | of it: event-loop thread "
            "| other threads (controller, ...) |",
            "|---|---|---|---|---|---|",
            *[f"| {k} | {v['wall_ms']} | {v['client_cpu_ms']} | {v['server_cpu_ms']} | "
              f"{_fmt(v.get('server_event_loop_ms'), '', 2)} | "
              f"{_fmt(v.get('server_other_threads_ms'), '', 2)} |"
              for k, v in extras["submit_costs"].items()],
            "",
        ]
    if prof and "threads" in prof:
        lines += [
            f"### Profile of the gpupool server during a burst ({prof.get('label', '')}; "
            f"py-spy {prof['rate_hz']} Hz, {prof['samples']:,} samples of busy threads; a "
            f"separate run, at {prof['accepted_per_s_while_profiled']:.0f} accepted/s: the "
            "sampler takes CPU too)",
            "",
            "Each thread's share of all busy samples; within it, where the time ends "
            "(innermost library) and which gpupool function it is in (innermost, "
            "% of all samples).",
            "",
            "| thread | % | ends in | gpupool function |",
            "|---|---|---|---|",
            *[f"| {t['thread']} | {t['pct']} | "
              + ", ".join(f"{k} {v}" for k, v in t["libraries"]) + " | "
              + ", ".join(f"`{k}` {v}" for k, v in t["functions"]) + " |"
              for t in prof["threads"]],
            "",
        ]
    elif prof:
        lines += [f"Profile: {prof.get('skipped', prof)}", ""]
    if data.get("analysis"):
        lines += [data["analysis"].strip(), ""]
    out_md.write_text("\n".join(lines))


def command_line(args: dict[str, Any]) -> str:
    """The command that measures what ``args`` did (the flags that shape the results)."""
    words = [".venv/bin/python bench/slurm_compare.py"]
    for flag, default in (("jobs", 1000), ("clients", 8), ("latency_samples", 200),
                          ("gpus", 4)):
        if args.get(flag, default) != default:
            words.append(f"--{flag.replace('_', '-')} {args[flag]}")
    for params in args.get("slurm_config") or []:
        words.append(f"--slurm-config {params or chr(39) * 2}")
    for tick in args.get("gpupool_tick") or []:
        words.append(f"--gpupool-tick {tick:g}")
    if args.get("no_slurm"):
        words.append("--no-slurm")
    return " ".join(words)


def cpu_section(slurms: list[dict[str, Any]], gps: list[dict[str, Any]],
                extras: dict[str, Any], clients: int) -> list[str]:
    """Core-seconds during the burst (ms per job)."""
    cores = os.cpu_count() or 1
    columns: list[tuple[str, dict[str, Any], int]] = [
        *[(s["label"], s["burst_cpu_s"], s["jobs"]) for s in slurms],
        *[(g["label"], g["burst_cpu_s"], g["jobs"]) for g in gps],
    ]
    if "parked_cpu_s" in extras:
        pc = extras["parked_cpu_s"]
        columns.append((f"{extras['label']}, queue without quota",
                        {**pc, "machine_capacity": pc["burst_s"] * cores}, extras["jobs"]))

    def cell(value: float | None, jobs: int) -> str:
        if value is None:
            return "—"
        return f"{value:,.1f}" if jobs == 1000 else f"{value:,.1f} ({1000 * value / jobs:,.1f})"

    def row(label: str, key: Callable[[dict[str, Any]], float | None]) -> str:
        return f"| {label} | " + " | ".join(cell(key(c), n) for _, c, n in columns) + " |"

    lines = [
        "### CPU during the burst: core-seconds (per 1,000 jobs: ms per job)",
        "",
        "| | " + " | ".join(label for label, _, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        row(f"burst length × {cores} cores", lambda c: c.get("machine_capacity")),
        row("whole machine busy (other work included)", lambda c: c.get("machine_busy")),
        row("server: slurmctld / `gpupool up`", lambda c: c.get("slurmctld", c.get("server"))),
        row("slurmd + munged", lambda c: _sum(c, "slurmd", "munged")),
        row("jobs' processes the server reaped", lambda c: c.get("server_reaped_children")),
        row(f"the {clients} clients (Slurm: with their sbatch)",
            lambda c: c.get("clients_with_sbatch", c.get("clients"))),
        "",
    ]
    if "parked_accepted_per_s" in extras:
        lines += [f"{extras['label']} into a queue without quota (nothing launches, the same "
                  f"{clients} SDK clients): **{_fmt(extras['parked_accepted_per_s'])} "
                  "accepted/s**.", ""]
    return lines


def _sum(d: dict[str, Any], *keys: str) -> float | None:
    values = [d[k] for k in keys if k in d]
    return sum(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--cost-samples", type=int, default=300,
                        help="gpupool: sequential submits per way of submitting")
    parser.add_argument("--finish-timeout", type=float, default=1200,
                        help="give up waiting for all jobs to finish after this many s")
    parser.add_argument("--slurm-config", action="append", metavar="PARAMS",
                        help="measure a Slurm with these SchedulerParameters ('' for Slurm's "
                        "defaults); repeat for several columns (default: one, defaults)")
    parser.add_argument("--no-slurm", action="store_true", help="measure gpupool only")
    parser.add_argument("--gpupool-tick", action="append", type=float, metavar="S",
                        help="measure a gpupool up with this --tick; repeat for several "
                        f"columns (default: one, {DEFAULT_TICK:g}, gpupool up's default)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"),
                        help="py-spy to profile the server with (default: on PATH)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-rate", type=int, default=100)
    parser.add_argument("--keep-profile", help="copy py-spy's raw output here")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--max-wait", type=float, default=600)
    parser.add_argument("--analysis", help="a Markdown file to append to the report")
    parser.add_argument("--out", default=str(RESULTS / "slurm.md"))
    parser.add_argument("--json", default=str(RESULTS / "slurm.json"))
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite --out from --json (and --analysis)")
    args = parser.parse_args()
    if args.report_only:
        stored: dict[str, Any] = json.loads(Path(args.json).read_text())
        if args.analysis:
            stored["analysis"] = Path(args.analysis).read_text()
        write_report(Path(args.out), Path(args.json), stored)
        print(f"written to {args.out} and {args.json}")
        return
    started = time.monotonic()
    data: dict[str, Any] = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": versions(),
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "json")},
        "quiet": wait_for_quiet(args.max_load, args.max_wait),
    }
    data["slurm"] = []
    for params in args.slurm_config or [""]:
        label = slurm_label(params)
        if args.no_slurm:
            data["slurm"].append({"label": label, "skipped": "--no-slurm"})
        elif why := missing():
            print(f"Slurm skipped: {why}", flush=True)
            data["slurm"].append({"label": label, "skipped": why, "install": APT})
        else:
            try:
                data["slurm"].append(measure_slurm(args, params))
            except Exception as exc:  # recorded: the gpupool side is still measured
                print(f"{label} failed: {exc}", flush=True)
                data["slurm"].append({"label": label, "error": str(exc)})
            wait_for_quiet(args.max_load, args.max_wait)
    ticks = args.gpupool_tick or [DEFAULT_TICK]
    data["gpupool"] = []
    for i, tick in enumerate(ticks):
        data["gpupool"].append(measure_gpupool(args, tick, extras=i == 0))
        wait_for_quiet(args.max_load, args.max_wait)
    if args.no_profile:
        data["profile"] = {"skipped": "--no-profile"}
    elif not args.py_spy:
        data["profile"] = {"skipped": "py-spy not found (pip install py-spy; --py-spy PATH)"}
    else:
        data["profile"] = {"label": gpupool_label(ticks[0]),
                           **profile_gpupool(args, args.py_spy, ticks[0])}
    if args.analysis:
        data["analysis"] = Path(args.analysis).read_text()
    data["run_minutes"] = round((time.monotonic() - started) / 60, 1)
    write_report(Path(args.out), Path(args.json), data)
    print(f"written to {args.out} and {args.json}")


if __name__ == "__main__":
    main()
