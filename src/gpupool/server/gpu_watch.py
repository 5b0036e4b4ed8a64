"""The GPU watch: every ``interval_s`` seconds, what NVML says of this machine's GPUs and of
the running attempts' processes, turned into metrics, usage-record figures, idle flags and
notebook activity.

One pass (:meth:`GpuWatch.sample`):

1. read NVML (``executors.nvml_sampler``; only queries, no device setting changed) and the
   process table (``executors.proc_tree``); NVML's host pids belong to the attempt whose
   shim's process group they are in or run under (sandboxed jobs run in a pid namespace of
   their own, NVML and ``/proc`` still tell host pids);
2. per attempt, its utilisation and memory (``server.gpu_figures``); where NVML cannot tell
   a process's memory, the interposer's ledger of the attempt, its records matched to the
   attempt's live processes by their pid in the job's own namespace and start time;
3. publish the sample for ``/metrics`` (``metrics.gpu_board``), add it to each attempt's
   tally and write the tallies to the usage records (``services.gpu_usage``), flag attempts
   idle past ``idle_after_s``, and tell the notebook watch of a notebook whose GPUs are
   busy (``on_busy``: GPU use is activity).

The running attempts are read from the loop's live state without its lock (one copy of a
dict, atomic under the GIL); an attempt that ends meanwhile is measured once more at most.
Only local nodes are watched (a Ray pool has no watch here: its agents do not report yet).
After a restart each attempt's tally goes on from its record; its idle spell too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from gpupool.executors import proc_tree
from gpupool.executors.containers import CONMON_PID_FILE
from gpupool.executors.nvml_sampler import NvmlReading, NvmlSampler
from gpupool.interposer import sharefile
from gpupool.schemas.jobs import Kind
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team
from gpupool.server.gpu_figures import (
    IDLE_BELOW,
    Attempt,
    CardShare,
    IdleWindow,
    JobFigure,
    Tally,
    gpu_figures,
    job_figures,
)
from gpupool.server.live_state import LiveState
from gpupool.server.metrics.gpu_board import Board, GpuBoard, JobGpu
from gpupool.server.services import gpu_usage
from gpupool.server.services.identity import live_name

log = logging.getLogger("gpupool.gpus")

Key = tuple[int, int]
"""(job id, attempt)."""


class GpuWatch:
    """The thread of the module. ``live``: the loop's live state (its ``active`` jobs and
    nodes); ``share_file(job, attempt)``: the attempt's interposer ledger path (None: no
    ledger); ``on_busy(job, at)``: a notebook's GPUs were busy at ``at``."""

    def __init__(self, db: Database, live: LiveState, board: GpuBoard, interval_s: float,
                 idle_after_s: float,
                 on_busy: Callable[[int, float], None] | None = None,
                 share_file: Callable[[int, int], Path] | None = None,
                 sampler: NvmlSampler | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.live = live
        self.board = board
        self.interval_s = interval_s
        self.on_busy = on_busy
        self.share_file = share_file
        self.sampler = sampler or NvmlSampler()
        self.clock = clock
        self.idle = IdleWindow(idle_after_s)
        self._tallies: dict[Key, Tally] = {}
        self._saved_idle: dict[Key, float | None] = {}
        self._jobs: dict[int, tuple[str, str]] = {}
        """Team name and kind of each running job seen (read once)."""
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpupool-gpus", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sampler.close()

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.sample()
                if self._failing:
                    log.warning("GPU sampling works again")
                self._failing = ""
            except Exception as exc:  # the watch must outlive a bad pass (a database outage)
                if str(exc) != self._failing:
                    self._failing = str(exc)
                    log.exception("GPU sampling failed; retrying every %g s", self.interval_s)
            self._halt.wait(self.interval_s)

    # -- one pass ----------------------------------------------------------------------

    def sample(self) -> None:
        """One pass (module docstring); also called directly by tests."""
        reading = self.sampler.read()
        if reading is None:
            if self.sampler.problem and self.sampler.problem != self._failing:
                self._failing = self.sampler.problem
                log.warning("GPU sampling: %s", self.sampler.problem)
            return
        now = self.clock()
        attempts, roots = self._running()
        table = proc_tree.read_table()
        owner = proc_tree.owners(table, roots)
        attempts = self._with_ledgers(reading, attempts, owner, table)
        figures = job_figures(reading, attempts, owner)
        self._learn_jobs([a.job_id for a in attempts])
        self._resume([(f.job_id, f.attempt) for f in figures])
        rows, jobs = [], []
        for figure in figures:
            key = (figure.job_id, figure.attempt)
            self.idle.observe(key, figure.utilization, now)
            idle_since = self.idle.flagged_since(key, now)
            changed = self._tallies[key].add(figure, now, self.interval_s)
            if changed or idle_since != self._saved_idle.get(key):
                rows.append(self._measured(key, idle_since))
            team, kind = self._jobs.get(figure.job_id, ("", ""))
            jobs.append(JobGpu(str(figure.job_id), team, figure.utilization,
                               figure.memory_bytes, idle_since is not None))
            self._busy(figure, kind, now)
        gpus = tuple((g.node, g.gpu, g.utilization, g.memory_used_bytes)
                     for g in gpu_figures(reading, self.live.inventory.physical_gpus))
        self.board.publish(Board(gpus, tuple(jobs), now))
        gpu_usage.save(self.db, rows)
        for row in rows:
            self._saved_idle[(row.job_id, row.attempt)] = row.idle_since
        self._forget({(f.job_id, f.attempt) for f in figures})

    def _running(self) -> tuple[list[Attempt], dict[int, int]]:
        """The running attempts holding GPUs on local nodes, and their shims' pids (the
        roots of their process trees) → job id."""
        live = self.live
        state, physical = live.state, live.inventory.physical_gpus
        attempts: list[Attempt] = []
        roots: dict[int, int] = {}
        for job_id, active in list(live.active.items()):
            handles = list(active.handles)
            if not handles:
                continue
            cards = []
            for allocation in active.live.allocations:
                node = state.names[allocation.node]
                for gpu in allocation.gpus:
                    if node in physical and gpu < len(physical[node]):
                        cards.append(CardShare(node, gpu, physical[node][gpu],
                                               allocation.gpu_milli))
            if not cards:
                continue
            attempts.append(Attempt(job_id, active.attempt, tuple(cards)))
            for handle in handles:
                roots[handle.pid] = job_id
                conmon = container_monitor(handle.run_dir)
                if conmon is not None:  # a job in an image: its processes are below conmon
                    roots[conmon] = job_id
        return attempts, roots

    def _with_ledgers(self, reading: NvmlReading, attempts: list[Attempt],
                      owner: dict[int, int],
                      table: dict[int, proc_tree.Proc]) -> list[Attempt]:
        """``attempts``, those with a process whose memory NVML cannot tell given their
        ledger (when they have one)."""
        unknown = {owner[p.pid] for p in reading.processes
                   if p.memory_bytes is None and p.pid in owner}
        if not unknown or self.share_file is None:
            return attempts
        out = []
        for a in attempts:
            if a.job_id in unknown:
                pids = [pid for pid, job in owner.items() if job == a.job_id]
                a = Attempt(a.job_id, a.attempt, a.cards,
                            self._ledger(self.share_file(a.job_id, a.attempt), pids, table))
            out.append(a)
        return out

    @staticmethod
    def _ledger(path: Path, pids: list[int],
                table: dict[int, proc_tree.Proc]) -> tuple[int, ...] | None:
        """Bytes per device ordinal of the ledger's records that are the attempt's live
        processes (matched by namespace pid and start time); None without a ledger."""
        try:
            records = sharefile.records(path)
        except (OSError, ValueError):
            return None
        live = set()
        for pid in pids:
            inner = proc_tree.namespace_pid(pid)
            if inner is not None and pid in table:
                live.add((inner, table[pid].start_time))
        totals = [0] * sharefile.MAX_DEVS
        for pid, start, per_dev in records:
            if (pid, start) in live:
                totals = [a + b for a, b in zip(totals, per_dev, strict=True)]
        return tuple(totals)

    def _learn_jobs(self, job_ids: list[int]) -> None:
        missing = [j for j in job_ids if j not in self._jobs]
        if not missing:
            return
        with self.db.read() as s:
            rows = s.execute(select(Job.id, Team.name, Job.kind)
                             .join(Team, Team.id == Job.team_id)
                             .where(Job.id.in_(missing))).all()
        for job_id, team, kind in rows:
            self._jobs[int(job_id)] = (live_name(str(team)), str(kind or Kind.JOB.value))

    def _resume(self, keys: list[Key]) -> None:
        """Tallies for attempts seen for the first time, from their records (a restart)."""
        new = [k for k in keys if k not in self._tallies]
        if not new:
            return
        stored = gpu_usage.measured(self.db, new)
        for key in new:
            m = stored.get(key)
            if m is None:
                self._tallies[key] = Tally()
                continue
            self._tallies[key] = Tally(m.used_gpu_s, m.measured_s, m.util_peak,
                                       m.memory_peak_mib)
            self._saved_idle[key] = m.idle_since
            if m.idle_since is not None:
                self.idle.resume(key, m.idle_since)

    def _measured(self, key: Key, idle_since: float | None) -> gpu_usage.Measured:
        t = self._tallies[key]
        return gpu_usage.Measured(key[0], key[1], t.used_gpu_s, t.measured_s, t.util_peak,
                                  t.memory_peak_mib, idle_since)

    def _busy(self, figure: JobFigure, kind: str, now: float) -> None:
        if (self.on_busy is not None and kind == Kind.NOTEBOOK.value
                and figure.utilization is not None and figure.utilization >= IDLE_BELOW):
            self.on_busy(figure.job_id, now)

    def _forget(self, running: set[Key]) -> None:
        for key in [k for k in self._tallies if k not in running]:
            self._tallies.pop(key, None)
            self._saved_idle.pop(key, None)
        self.idle.keep(running)
        alive = {job for job, _ in running}
        for job in [j for j in self._jobs if j not in alive]:
            del self._jobs[job]


def container_monitor(run_dir: str) -> int | None:
    """The pid of the conmon watching the attempt's container (podman wrote it in its run
    dir), or None: not in an image, or not started yet."""
    try:
        with open(os.path.join(run_dir, CONMON_PID_FILE)) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
