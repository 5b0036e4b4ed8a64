"""What the server knows of its services' replicas that is not in the database: which
replicas answer their readiness path, which are being drained, and the gateway's traffic
reports. The service controller writes readiness and draining; the gateway writes load
(``report``) and demand (``wake``); the API and the gateway's directory read. Kept in
memory: after a restart the controller probes every replica again within a tick, and an
interrupted drain is decided anew.

Thread-safe (one lock); every method is cheap, so the gateway may call ``report`` on its
event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gpupool.server.gateway.service_directory import Load

WAITING = 0
"""The key of ``Load.inflight`` under which the gateway counts requests waiting for a
replica (none ready)."""


@dataclass(frozen=True)
class Traffic:
    """A service's last load report and when it came (``clock`` seconds)."""

    load: Load
    at: float

    @property
    def inflight(self) -> int:
        """Requests in flight on replicas plus those waiting for one."""
        return sum(self.load.inflight.values())


class ServiceBoard:
    """See the module docstring. ``clock``: monotonic seconds (tests inject one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._ready: set[int] = set()
        self._draining: dict[int, float] = {}
        self._traffic: dict[str, Traffic] = {}
        self._woken: dict[str, float] = {}
        self._cold_since: dict[str, float] = {}
        self._cold_starts: dict[str, float] = {}

    # -- replicas (the controller) ------------------------------------------------------

    def set_ready(self, job_id: int, ready: bool) -> None:
        with self._lock:
            (self._ready.add if ready else self._ready.discard)(job_id)

    def is_ready(self, job_id: int) -> bool:
        with self._lock:
            return job_id in self._ready

    def drain(self, job_id: int) -> None:
        """Send no new requests to replica ``job_id`` (from now; idempotent)."""
        with self._lock:
            self._draining.setdefault(job_id, self.clock())

    def draining_since(self, job_id: int) -> float | None:
        with self._lock:
            return self._draining.get(job_id)

    def forget(self, job_id: int) -> None:
        """The replica ended: drop what was known of it."""
        with self._lock:
            self._ready.discard(job_id)
            self._draining.pop(job_id, None)

    def known_replicas(self) -> set[int]:
        with self._lock:
            return self._ready | set(self._draining)

    # -- traffic (the gateway) ----------------------------------------------------------

    def report(self, name: str, load: Load) -> None:
        with self._lock:
            self._traffic[name] = Traffic(load, self.clock())

    def traffic(self, name: str) -> Traffic | None:
        with self._lock:
            return self._traffic.get(name)

    def inflight_on(self, name: str, job_id: int) -> int:
        with self._lock:
            traffic = self._traffic.get(name)
        return 0 if traffic is None else traffic.load.inflight.get(job_id, 0)

    def wake(self, name: str) -> None:
        """A request waits for ``name``, which has no ready replica (the first such wake
        starts a cold start's clock)."""
        with self._lock:
            now = self._woken[name] = self.clock()
            self._cold_since.setdefault(name, now)

    def warmed(self, name: str) -> float | None:
        """``name`` has a ready replica: the cold start that ends now (seconds from the first
        request that waited), or None when no request was waiting for one."""
        with self._lock:
            since = self._cold_since.pop(name, None)
            if since is None:
                return None
            took = self._cold_starts[name] = self.clock() - since
            return took

    def last_cold_start(self, name: str) -> float | None:
        with self._lock:
            return self._cold_starts.get(name)

    def woken_at(self, name: str) -> float | None:
        with self._lock:
            return self._woken.get(name)

    def drop_service(self, name: str) -> None:
        with self._lock:
            self._traffic.pop(name, None)
            self._woken.pop(name, None)
            self._cold_since.pop(name, None)
            self._cold_starts.pop(name, None)
