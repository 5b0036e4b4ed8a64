"""The service controller: a thread that keeps every service's replicas as its spec and
its traffic say.

Every ``interval`` seconds (sooner when poked: a deploy, a delete, a request waiting for a
replica) it reads the services and their live replicas, and for each service:

1. probes replicas that run but are not ready yet: ``GET <readiness.path>`` over the
   replica's Unix socket; a 2xx or 3xx answer makes it ready (the gateway routes to it);
2. decides the desired replica count from the gateway's load report (``service_scaling``)
   and writes it when it changed;
3. applies ``service_plan.plan``: starts missing replicas (jobs submitted as the service's
   owner; after repeated failures of the current spec, no faster than an exponential
   back-off, so a crashing command does not flood the queue), drains surplus and superseded
   ones, stops drained ones.

Replicas whose service was deleted are stopped. Readiness and draining live on the
``ServiceBoard``, shared with the gateway and the API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import httpx

from gpupool.server.db.database import Database
from gpupool.server.service_board import ServiceBoard
from gpupool.server.service_plan import ReplicaRow, plan
from gpupool.server.service_replicas import (
    ReplicaJob,
    ServiceRow,
    live_replicas,
    live_services,
    recent_failures,
)
from gpupool.server.service_scaling import Autoscaler
from gpupool.server.services.replica_orders import set_desired, start_replica, stop_replica

log = logging.getLogger("gpupool.services")

PROBE_TIMEOUT_S = 1.0
STARTING_INTERVAL_S = 0.1
"""The pass interval while a launched replica has not answered its readiness path yet: its
readiness is most of a cold start (bench/results/services.md)."""
FAILURE_WINDOW_S = 300.0
MAX_BACKOFF_S = 60.0


def backoff_s(failures: int) -> float:
    """How long to wait after the last failed replica before starting another: none for the
    first failure, then 1, 2, 4, ... seconds, at most a minute."""
    return 0.0 if failures < 2 else min(MAX_BACKOFF_S, 2.0 ** (failures - 2))


class ServiceWatch:
    """The thread of the module. ``known_models()``: the GPU models of the pool (a replica's
    ``gpu_model`` is checked against them); ``wake`` wakes the scheduling loop; ``wall``:
    UNIX time, as the loop stamps jobs' ends (tests inject their clock)."""

    def __init__(self, db: Database, board: ServiceBoard,
                 known_models: Callable[[], list[str]], wake: Callable[[], None],
                 interval: float = 0.5, wall: Callable[[], float] = time.time) -> None:
        self.db = db
        self.wall = wall
        self.board = board
        self.known_models = known_models
        self.wake = wake
        self.interval = interval
        self.autoscaler = Autoscaler()
        self._poked = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._probes: dict[str, httpx.Client] = {}
        self._starting = False  # the last pass saw a launched replica not yet ready

    def poke(self) -> None:
        """Run a pass soon (any thread)."""
        self._poked.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpupool-services", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._poked.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for client in self._probes.values():
            client.close()
        self._probes.clear()

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.check()
            except Exception:  # the controller must outlive any one bad pass
                log.warning("service controller pass failed", exc_info=True)
            self._poked.wait(min(self.interval, STARTING_INTERVAL_S) if self._starting
                             else self.interval)
            self._poked.clear()

    def check(self) -> None:
        """One pass over every service (also called directly by tests)."""
        services = live_services(self.db)
        replicas: dict[int, list[ReplicaJob]] = defaultdict(list)
        for replica in live_replicas(self.db):
            replicas[replica.service_id].append(replica)
        live_ids = {r.id for group in replicas.values() for r in group}
        for job_id in self.board.known_replicas() - live_ids:
            self.board.forget(job_id)
        by_id = {s.id: s for s in services}
        stopped = False
        self._starting = False
        for service_id, group in replicas.items():
            if service_id not in by_id:
                for replica in group:
                    if not replica.stopping:
                        stop_replica(self.db, replica.id, "its service was deleted")
                        stopped = True
        for service in services:
            stopped |= self._reconcile(service, replicas.get(service.id, []))
        self._close_probes({r.uds for group in replicas.values() for r in group})
        if stopped:
            self.wake()

    def _reconcile(self, service: ServiceRow, group: list[ReplicaJob]) -> bool:
        live = [r for r in group if not r.stopping]
        for replica in live:
            if replica.uds and not self.board.is_ready(replica.id):
                ready = self._probe(replica.uds, service)
                self.board.set_ready(replica.id, ready)
                self._starting |= not ready
        if any(self.board.is_ready(r.id) for r in live):
            took = self.board.warmed(service.name)
            if took is not None:
                log.info("service %s: cold start %.2f s (from the first waiting request to a "
                         "ready replica)", service.name, took)
        now = self.board.clock()
        traffic = self.board.traffic(service.name)
        desired = self.autoscaler.desired(service.name, service.spec,
                                          traffic.inflight if traffic else 0,
                                          self.board.woken_at(service.name), now)
        if desired != service.desired:
            set_desired(self.db, service.id, desired)
            log.info("service %s: %d → %d replicas", service.name, service.desired, desired)
        rows = [ReplicaRow(r.id, r.generation, self.board.is_ready(r.id),
                           self.board.draining_since(r.id),
                           self.board.inflight_on(service.name, r.id)) for r in live]
        actions = plan(service.generation, desired, rows, now)
        for job_id in actions.drain:
            self.board.drain(job_id)
        for job_id in actions.stop:
            stop_replica(self.db, job_id, f"service {service.name}: replica no longer needed")
        if actions.start and not self._backing_off(service):
            for _ in range(actions.start):
                start_replica(self.db, service, self.known_models(), self.wake)
        return bool(actions.stop)

    def _backing_off(self, service: ServiceRow) -> bool:
        now = self.wall()
        failures, last = recent_failures(self.db, service.id, service.generation,
                                         now - FAILURE_WINDOW_S)
        return now - last < backoff_s(failures)

    def _probe(self, uds: str, service: ServiceRow) -> bool:
        client = self._probes.get(uds)
        if client is None:
            client = self._probes[uds] = httpx.Client(
                transport=httpx.HTTPTransport(uds=uds), trust_env=False,
                timeout=PROBE_TIMEOUT_S)
        try:
            answer = client.get(f"http://replica{service.spec.readiness.path}",
                                headers={"X-Forwarded-Prefix": f"/svc/{service.name}"})
        except httpx.HTTPError:
            return False
        return answer.status_code < 400 and "x-gpupool-unreached" not in answer.headers

    def _close_probes(self, live: set[str]) -> None:
        for uds in [u for u in self._probes if u not in live]:
            self._probes.pop(uds).close()
