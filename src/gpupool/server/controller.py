"""The background loop: it orders the steps; each step's work is a module of its own, and
the job store (server/job_store.py) reads and writes every row they decide.

Each step (on a short tick, or at once when woken by a submit or cancel):

1. load newly submitted jobs into the in-memory pending set (server/watching.py);
2. act on cancel requests (pending: end now; running: SIGTERM, SIGKILL after the grace);
3. record the launches the launch worker finished (server/launch_worker.py);
4. poll running processes; stop those past their time limit; finish, retry or requeue
   (preempted) the ones that ended (server/outcomes.py: rows first; failed row writes are
   redone, server/write_retry.py);
5. schedule (server/placing.py): run the shared queue cycle (core/queue_cycle.py) on the
   live state (server/live_state.py), persist placements *before* launching (so a crash
   never hands a share out twice), hand the launches to the worker, and record preemptions
   and pending reasons. Skipped once :meth:`Controller.hold` was called (the server drains).

Nodes that join or leave (``membership``) are followed before and after polling.
``recover`` rebuilds the snapshot from the database after a restart and re-adopts the
processes that are still running (server/recovery.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gpupool.core.capacity import never_fits
from gpupool.core.cluster import ClusterState
from gpupool.core.live import CycleOutcome, LiveJob
from gpupool.core.scheduler import Scheduler
from gpupool.executors.base import Executor, Handle
from gpupool.executors.inventory import LocalInventory
from gpupool.schemas.jobs import JobSpec
from gpupool.server.active import Active, to_request
from gpupool.server.artifact_hook import ended_of
from gpupool.server.artifacts import ArtifactCollector, ArtifactStore
from gpupool.server.db.database import Database
from gpupool.server.job_store import JobStore
from gpupool.server.launcher import Launcher
from gpupool.server.live_state import LiveState
from gpupool.server.metrics.loop_metrics import LoopMetrics
from gpupool.server.outcomes import EndRecorder, problem_text
from gpupool.server.placing import Placing
from gpupool.server.pool_nodes import build_scheduler, carry_over
from gpupool.server.queue_inputs import UsageCache, queue_policy
from gpupool.server.recovery import Recovery
from gpupool.server.registry_auth import RegistryAuth
from gpupool.server.settings import Settings
from gpupool.server.sharing.setup import Sharing
from gpupool.server.watching import Watch
from gpupool.server.workspace import Workspace
from gpupool.server.write_retry import WriteRetries

log = logging.getLogger("gpupool.controller")

STEP_COALESCE_S = 0.005


class Controller:
    """The scheduling loop of one server (see the module). ``step`` runs under a lock, so a
    test or benchmark may call it while no thread runs the loop."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        executor: Executor,
        inventory: LocalInventory,
        interposer: str | None = None,
        interposer_missing: str = "not built",
        membership: Callable[[], LocalInventory | None] | None = None,
        sharing: Sharing | None = None,
        clock: Callable[[], float] = time.time,
        launch_threads: int = 1,
    ) -> None:
        """``interposer``: the path of ``libgpushare.so`` when GPU shares are enforced with it
        on this machine's nodes; else None, and ``interposer_missing`` says why not.
        ``membership`` (a pool whose nodes come and go, e.g. Ray): called every step, returns
        the new inventory when nodes joined or left, else None. ``sharing``: what the nodes
        offer for enforcing GPU shares (MIG, MPS, interposer); it supersedes ``interposer``.
        ``clock``: the time of each step (tests inject a fake one). ``launch_threads``:
        threads that start placed jobs' processes off the loop (0: inline, in the step)."""
        self.clock = clock
        self.membership = membership
        self.settings = settings
        self.db = db
        self.store = JobStore(db)
        """The loop's only reader and writer of rows (server/job_store.py)."""
        state = ClusterState(inventory.nodes)
        self.live = LiveState(inventory, state, build_scheduler(settings.policy, state))
        self.launcher = Launcher(settings.runs_dir, executor, inventory, state,
                                 interposer, interposer_missing, sharing,
                                 Workspace(settings.jobs_root))
        self._retries = WriteRetries()
        """Row writes that failed (the database was unavailable), by job: retried at the start
        of every step until they succeed."""
        self.metrics = LoopMetrics(lambda: self.live.state)
        """What the loop counts (cycle times, waits, preemptions; the API's submits), read by
        the app's ``/metrics`` collector (server/metrics/)."""
        self._ends = EndRecorder(self.store, self.live, self.launcher.drop_share_file,
                                 self._reconsider_all)
        self.policy = queue_policy(settings)
        self._usage = UsageCache(db, settings.fairshare_half_life_s)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.holding = False
        """Set by :meth:`hold`: no pending job is placed any more."""
        self.watch = Watch(self.store, self.live, self.launcher, self._ends, self._retries,
                           clock)
        self.watch.notebook_lifetime_s = settings.notebook_max_lifetime_s
        self._ends.drop_env_dir = self.launcher.workspace.drop_env_dir
        self.artifacts = ArtifactCollector(
            ArtifactStore(settings.home, settings.artifact_limit_mib,
                          settings.team_artifact_limit_mib),
            self._pack_on_node if membership is not None else None)  # other machines' nodes
        self._ends.ended_attempt = self._keep_artifacts
        self.launcher.image_auth = RegistryAuth(db, settings.home).auth_file
        self._ends.requeued = self.metrics.queued
        self.watch.metrics = self.metrics
        self.placing = Placing(self.store, self.live, self.launcher, self.policy, self._usage,
                               self._ends, self._retries, self.watch.stop, self._wake.set,
                               launch_threads, metrics=self.metrics)

    @property
    def executor(self) -> Executor:
        """Where the processes run (the launcher's: one executor for launching, polling and
        stopping)."""
        return self.launcher.executor

    @executor.setter
    def executor(self, executor: Executor) -> None:
        self.launcher.executor = executor

    # The live state's parts, by their old names (tests read them).
    @property
    def state(self) -> ClusterState:
        return self.live.state

    @property
    def scheduler(self) -> Scheduler:
        return self.live.scheduler

    @property
    def inventory(self) -> LocalInventory:
        return self.live.inventory

    @property
    def pending(self) -> dict[int, LiveJob]:
        return self.live.pending

    @property
    def active(self) -> dict[int, Active]:
        return self.live.active

    @property
    def last_outcome(self) -> CycleOutcome | None:
        return self.placing.last_outcome

    @last_outcome.setter
    def last_outcome(self, value: CycleOutcome | None) -> None:
        self.placing.last_outcome = value

    @property
    def last_cycle_seconds(self) -> float:
        return self.placing.last_cycle_seconds

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def models(self) -> tuple[str, ...]:
        return self.state.models

    def never_fits(self, spec: JobSpec) -> str | None:
        """Why no node of this fixed pool could ever hold ``spec`` (its whole capacity, not
        what is free), else None. A pool whose nodes come and go (``membership``, e.g. Ray)
        may grow: None, and the job's pending reason says it cannot fit as the pool is now."""
        if self.membership is not None:
            return None
        state = self.state  # read once: the loop may swap in a new state
        return never_fits(state, to_request(0, spec, "", state.models), spec.nodes)

    def wake(self, capacity_changed: bool = False) -> None:
        """Run a step soon. ``capacity_changed`` (quota edits) makes it reconsider every
        pending job, not only new ones."""
        if capacity_changed:
            self.live.dirty = True
        self._wake.set()

    def hold(self) -> None:
        """From the next step on, no pending job is placed, started or preempts another; the
        loop keeps loading, cancelling, polling and recording the jobs that hold resources
        (``gpupool down --drain``, server/stopping.py). There is no undo: the server stops."""
        self.holding = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpupool-loop", daemon=True)
        self._thread.start()

    def _pack_on_node(self, handle: Handle, base: str, paths: tuple[str, ...], limit: int,
                      run_as: str | None) -> tuple[int, str, bytes]:
        """Have the node of ``handle`` pack an attempt's artifacts (the pool's executor, on
        other machines: ``RayPool.pack_artifacts``)."""
        pack = self.launcher.executor.pack_artifacts  # type: ignore[attr-defined]
        return pack(handle, base, paths, limit, run_as)  # type: ignore[no-any-return]

    def _keep_artifacts(self, active: Active) -> None:
        """Hand an ended attempt that declared artifacts to the collector (its thread)."""
        if not active.spec.artifacts or not active.handles:
            return
        try:
            local = not self.membership  # a pool of other machines (Ray): packed there
            self.artifacts.submit(ended_of(self.db, self.launcher.workspace, active, local))
        except Exception:  # the job's end is recorded; its artifacts are not worth a crash
            log.exception("job %s: its artifacts could not be handed over", active.live.id)

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.artifacts.close()
        self.placing.worker.close()
        self.launcher.close()  # the server stops: so do its MPS daemons

    def _run(self) -> None:
        failing = ""  # the failure last logged, while steps keep failing (an outage)
        while not self._halt.is_set():
            try:
                self.step()
            except Exception as exc:  # the loop must survive any one bad step
                # Logged once per outage (e.g. the database down), not on every tick.
                if problem_text(exc) != failing:
                    failing = problem_text(exc)
                    log.exception("scheduler loop step failed; retrying every tick "
                                  "(logged again only if the failure changes)")
            else:
                if failing:
                    log.warning("scheduler loop steps succeed again")
                failing = ""
            self._wake.wait(self.settings.tick_seconds)
            # Coalesce a burst of submits into one step (costs at most a few ms of latency).
            time.sleep(STEP_COALESCE_S)
            self._wake.clear()

    def step(self) -> None:
        """One pass of the loop (also called directly by tests and benchmarks)."""
        with self._lock:
            now = self.clock()
            self._follow_membership(now)
            self._retries.retry()
            self._load_pending()
            self._handle_cancels(now)
            self.placing.collect(now)
            self._poll(now)
            self._follow_membership(now)  # polls may have found a node lost
            self._schedule(now)

    def _follow_membership(self, now: float) -> None:
        if self.membership is not None:
            changed = self.membership()
            if changed is not None:
                self._apply_inventory(changed, now)

    def _apply_inventory(self, inventory: LocalInventory, now: float) -> None:
        """Nodes joined or left: rebuild the snapshot and the scheduler on the new node set,
        carrying over every held allocation whose node is still there (jobs on departed
        nodes learn it from their processes, which poll as lost)."""
        if not inventory.nodes:
            log.warning("the pool has no node left; keeping the last known nodes")
            return
        state = ClusterState(inventory.nodes)
        scheduler = build_scheduler(self.settings.policy, state)
        carry_over(self.state, scheduler, [a.live for a in self.active.values()])
        self.live.state, self.live.scheduler, self.live.inventory = state, scheduler, inventory
        self.launcher.state, self.launcher.inventory = state, inventory
        self.live.dirty = True
        self._register_nodes(now)
        log.info("pool now has %d node(s): %s", state.num_nodes, ", ".join(state.names))

    # -- recovery ----------------------------------------------------------------------

    def recover(self) -> None:
        """Register the nodes, rebuild allocations of running jobs, re-adopt processes."""
        now = self.clock()
        self._register_nodes(now)
        Recovery(self.store, self.live, self.launcher, self._ends.requeue).run(now)
        self.store.close_stale_usage(now)  # attempts that ended while the server was down

    def _register_nodes(self, now: float) -> None:
        """Make the nodes table say what the pool has now (departed nodes removed)."""
        self.store.nodes(self.inventory, self.launcher.node_mechanisms, now)

    def _reconsider_all(self) -> None:
        """Capacity changed (a job ended): the next cycle reconsiders every pending job, with
        usage read again (the ended attempt's is final now)."""
        self.live.dirty = True
        self._usage.forget()

    # -- the steps, by the names tests call them ---------------------------------------

    @property
    def _max_seen(self) -> int:
        return self.watch.max_seen

    @_max_seen.setter
    def _max_seen(self, job_id: int) -> None:
        self.watch.max_seen = job_id

    def _load_pending(self) -> None:
        self.watch.load_pending()

    def _handle_cancels(self, now: float) -> None:
        self.watch.handle_cancels(now)

    def _poll(self, now: float) -> None:
        self.watch.poll(now)

    def _schedule(self, now: float) -> None:
        if not self.holding:
            self.placing.schedule(now)

    def _bind(self, placed: list[LiveJob], now: float) -> None:
        self.placing.bind(placed, now)
