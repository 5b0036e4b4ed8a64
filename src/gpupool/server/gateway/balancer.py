"""Which replica of a service gets the next request, and the traffic figures the control
plane sees: one ``Balancer`` per gateway, used from its event loop only.

Contracts:

- ``pick(name, replicas, tried)``: the replica with the fewest requests in flight through
  this gateway, among those not in ``tried`` (all of them when every one was tried).
  Draining replicas are skipped while another one is left, and so are replicas that failed
  (``failed``) in the last ``exclude_s`` seconds (2 s) — a recently failed replica comes
  last of all, after draining ones. Ties go round-robin. None only for no replicas.
- ``enter(name, key)`` / ``leave(name, key)``: one request (attempt) is in flight on
  replica ``key`` (``WAITING`` = 0: waiting for a replica to exist); ``finish(name)``: one
  request is done, whatever its outcome.
- Reports: every ``report_every_s`` (0.2 s) each service whose figures changed, or that
  has requests in flight, gets ``report(name, Load(inflight, finished))``: ``inflight``
  holds the replicas with requests in flight and always key 0 (waiting requests);
  ``finished`` counts the requests finished since the gateway started. After the last
  request of a service leaves, it gets one more report (all zero) and then none until new
  traffic. The reporting task runs only while there is something to report; nothing on a
  request's path waits for it. A failing ``report`` is logged and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Sequence

from gpupool.server.gateway.service_directory import Load, Replica

log = logging.getLogger(__name__)

WAITING = 0
EXCLUDE_S = 2.0
REPORT_EVERY_S = 0.2


class _Traffic:
    """One service's figures."""

    __slots__ = ("busy", "dirty", "finished", "inflight", "turn")

    def __init__(self) -> None:
        self.inflight: dict[int, int] = {}
        self.busy = 0  # sum of inflight
        self.finished = 0
        self.dirty = False
        self.turn = 0  # round-robin among ties


class Balancer:
    """Least-in-flight choice, failure exclusion and load reports (module docstring)."""

    def __init__(self, report: Callable[[str, Load], None], *,
                 now: Callable[[], float] = time.monotonic, exclude_s: float = EXCLUDE_S,
                 report_every_s: float = REPORT_EVERY_S) -> None:
        self._report = report
        self._now = now
        self._exclude_s = exclude_s
        self._every = report_every_s
        self._services: dict[str, _Traffic] = {}
        self._failed: dict[int, float] = {}
        self._ticker: asyncio.Task[None] | None = None

    def _traffic(self, name: str) -> _Traffic:
        traffic = self._services.get(name)
        if traffic is None:
            traffic = self._services[name] = _Traffic()
        return traffic

    # ------------------------------------------------------------------ choosing

    def pick(self, name: str, replicas: Sequence[Replica],
             tried: Collection[int] = ()) -> Replica | None:
        """The replica for the next attempt (module docstring)."""
        count = len(replicas)
        if count == 0:
            return None
        traffic = self._traffic(name)
        start = traffic.turn % count
        traffic.turn += 1
        failed = self._recently_failed() if self._failed else ()
        inflight = traffic.inflight
        best: Replica | None = None
        best_rank = (2, 2, 0)
        for _ in range(2):  # the second round only when every replica was tried
            for i in range(count):
                replica = replicas[(start + i) % count]
                if replica.id in tried:
                    continue
                rank = (replica.id in failed, replica.draining, inflight.get(replica.id, 0))
                if best is None or rank < best_rank:
                    best, best_rank = replica, rank
            if best is not None:
                return best
            tried = ()
        return best

    def failed(self, replica_id: int) -> None:
        """Replica ``replica_id`` failed just now: rank it last for ``exclude_s`` seconds."""
        self._failed[replica_id] = self._now()

    def excluded(self, replica_id: int) -> bool:
        """Whether replica ``replica_id`` failed in the last ``exclude_s`` seconds."""
        return replica_id in self._recently_failed()

    def _recently_failed(self) -> Collection[int]:
        now = self._now()
        stale = [rid for rid, at in self._failed.items() if now - at >= self._exclude_s]
        for rid in stale:
            del self._failed[rid]
        return self._failed.keys()

    # ------------------------------------------------------------------ counting

    def enter(self, name: str, key: int) -> None:
        """One request (attempt) is now in flight on replica ``key`` (0: waiting)."""
        traffic = self._traffic(name)
        traffic.inflight[key] = traffic.inflight.get(key, 0) + 1
        traffic.busy += 1
        traffic.dirty = True
        if self._ticker is None:
            self._start_ticker()

    def leave(self, name: str, key: int) -> None:
        """The request (attempt) ``enter`` counted on ``key`` is no longer in flight."""
        traffic = self._traffic(name)
        left = traffic.inflight.get(key, 0) - 1
        if left > 0:
            traffic.inflight[key] = left
        else:
            traffic.inflight.pop(key, None)
        traffic.busy -= 1
        traffic.dirty = True

    def finish(self, name: str) -> None:
        """One request to service ``name`` is done (answered, failed or abandoned)."""
        traffic = self._traffic(name)
        traffic.finished += 1
        traffic.dirty = True
        if self._ticker is None:
            self._start_ticker()

    def inflight(self, name: str) -> dict[int, int]:
        """Requests in flight now, by replica (0: waiting); a copy."""
        traffic = self._services.get(name)
        return {WAITING: 0, **(traffic.inflight if traffic else {})}

    # ------------------------------------------------------------------ reporting

    def flush(self) -> bool:
        """Report every service that changed or is busy; whether any is still busy."""
        busy = False
        for name, traffic in self._services.items():
            if not (traffic.dirty or traffic.busy):
                continue
            traffic.dirty = False
            busy = busy or traffic.busy > 0
            load = Load(inflight={WAITING: 0, **traffic.inflight}, finished=traffic.finished)
            try:
                self._report(name, load)
            except Exception:
                log.exception("reporting the load of service %r failed", name)
        return busy

    def _start_ticker(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._every)
                if not self.flush():
                    return
        finally:
            self._ticker = None

    async def aclose(self) -> None:
        """Stop reporting (gateway shutdown), after a last report of what changed."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        self.flush()
