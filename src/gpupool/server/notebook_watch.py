"""Watching running notebooks: when each is ready, how long it has been idle, and asking the
loop to suspend the ones idle past their timeout.

A thread asks every running notebook's Jupyter, every ``interval`` seconds, for its status
and its kernels (``/api/status`` and ``/api/kernels``, with the notebook's secret, marked
``no_track_activity`` so the question is no activity itself). Contract:

- ready: the first answer writes the notebook's gateway URL on its row (``JobView.url``);
  rows are read and written through the job store;
- activity: Jupyter's own ``last_activity`` (kernels, terminals, API requests), traffic
  the gateway saw and, on real GPUs, GPU use: the GPU watch (server/gpu_watch.py) touches a
  notebook whose GPUs are at least 5 % busy in a sample (:meth:`NotebookWatch.touch` for
  both); a busy kernel is activity now;
- idle: no activity for the notebook's ``idle_timeout_s`` (else its team's default, else
  the server's, either at most the team's maximum idle timeout when it has one) →
  a suspend request, written as the API's are (``services.notebooks``), with why;
  ``idle_since`` is written on the row once it has been idle a minute (and cleared when it
  is used again), so listings show who holds idle slices;
- a notebook that does not answer is neither ready nor idle (it may be starting).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from gpupool.schemas.jobs import JobSpec
from gpupool.server.db.database import Database
from gpupool.server.job_store import JobStore, NotebookRow
from gpupool.server.notebook_launch import base_url
from gpupool.server.services.notebooks import request_idle_suspend

log = logging.getLogger("gpupool.notebooks")

IDLE_SHOWN_AFTER_S = 60.0
"""A notebook shows ``idle_since`` once idle this long."""
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Probe:
    """What one notebook's Jupyter said: its last activity (UNIX time) and whether a
    kernel is busy."""

    last_activity: float
    busy: bool


def parse_time(text: str) -> float:
    """Jupyter's ISO 8601 times (``2026-12-03T21:40:07.123456Z``) as UNIX seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class NotebookWatch:
    """The thread of the module. ``secret(job, attempt)`` is the notebook's Jupyter token;
    ``gateway_url()`` the gateway's public URL; ``wake`` wakes the loop;
    ``default_idle_s``: the idle timeout of notebooks without their own whose team has no
    default either."""

    def __init__(self, db: Database, secret: Callable[[int, int], str],
                 gateway_url: Callable[[], str], wake: Callable[[], None],
                 default_idle_s: float, interval: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.store = JobStore(db)
        self.secret = secret
        self.gateway_url = gateway_url
        self.wake = wake
        self.default_idle_s = default_idle_s
        self.interval = interval
        self.clock = clock
        self._touched: dict[int, float] = {}
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(trust_env=False, timeout=PROBE_TIMEOUT_S)

    def touch(self, job_id: int, at: float) -> None:
        """The notebook was used at ``at``: traffic through the gateway, or its GPUs busy
        (cheap; any thread)."""
        if at > self._touched.get(job_id, 0.0):
            self._touched[job_id] = at

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpupool-notebooks",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._http.close()

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.check()
            except Exception:  # the watch must outlive any one bad pass (a database outage)
                log.warning("notebook watch pass failed", exc_info=True)
            self._halt.wait(self.interval)

    def check(self) -> None:
        """One pass over the running notebooks (also called directly by tests)."""
        rows = self.store.running_notebooks()
        live = {row.id for row in rows}
        for job_id in [j for j in self._touched if j not in live]:
            self._touched.pop(job_id, None)
        for row in rows:
            probe = self.probe(row.id, row.attempt, row.endpoint)
            if probe is not None:
                spec = JobSpec.model_validate(row.spec)
                self._judge(row.id, row.endpoint, spec, probe, self.timeout(spec, row))

    def timeout(self, spec: JobSpec, row: NotebookRow) -> float:
        """The notebook's idle timeout: its own, else its team's default, else the server's;
        a default (not its own, checked when it was submitted) is at most the team's
        maximum, when the team has one."""
        if spec.idle_timeout_s:
            return spec.idle_timeout_s
        default = row.team_idle_timeout_s or self.default_idle_s
        if row.team_max_idle_timeout_s is not None:
            default = min(default, row.team_max_idle_timeout_s)
        return default

    def probe(self, job_id: int, attempt: int, endpoint: dict[str, Any]) -> Probe | None:
        """Ask the notebook's Jupyter how it is; None when it does not answer (yet)."""
        root = f"http://{endpoint['host']}:{endpoint['port']}{base_url(job_id)}api"
        headers = {"Authorization": f"token {self.secret(job_id, attempt)}"}
        params = {"no_track_activity": "1"}
        try:
            status = self._http.get(f"{root}/status", headers=headers, params=params)
            kernels = self._http.get(f"{root}/kernels", headers=headers, params=params)
            if status.status_code != 200 or kernels.status_code != 200:
                return None
            last = parse_time(status.json()["last_activity"])
            busy = any(k.get("execution_state") == "busy" for k in kernels.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        return Probe(last, busy)

    def _judge(self, job_id: int, endpoint: dict[str, Any], spec: JobSpec,
               probe: Probe, timeout: float) -> None:
        now = self.clock()
        last = max(probe.last_activity, self._touched.get(job_id, 0.0))
        if probe.busy:
            last = now
        idle_for = max(0.0, now - last)
        url = f"{self.gateway_url()}{base_url(job_id)}lab"
        idle_since = last if idle_for >= IDLE_SHOWN_AFTER_S else None
        seen = endpoint.get("idle_since")
        moved = (idle_since is None) != (seen is None) or (
            idle_since is not None and seen is not None and abs(idle_since - seen) > 1)
        if endpoint.get("url") != url or moved:
            self.store.notebook_seen(job_id, {**endpoint, "url": url, "idle_since": idle_since})
        if idle_for >= timeout:
            request_idle_suspend(
                self.db, job_id, f"idle for {idle_for:.0f} s (its idle timeout is "
                f"{timeout:g} s): suspending it, its files kept", self.wake)
