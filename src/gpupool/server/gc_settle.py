"""Garbage collection for a long-running server: settle the heap once after start-up and
then every ``interval_s``, so that the full (generation 2) collections CPython would run on
its own every few requests no longer walk the whole, mostly long-lived heap.

Settling is ``gc.unfreeze(); gc.collect(); gc.freeze()``: every object that survives a full
collection goes to the permanent generation, which automatic collections skip. Cyclic
garbage made of settled objects waits for the next settling (it is found then: unfreeze
first), so memory stays bounded; the cost is one full collection per interval instead of
one every few scrapes (bench/results/metrics.md: /metrics p90 214 → see there).
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger("gpupool.server")
DEFAULT_INTERVAL_S = 600.0
FIRST_AFTER_S = 5.0
"""The first settling waits this long: start-up is not delayed by it, and what start-up and
recovery made by then is settled."""


def settle() -> float:
    """One settling (see the module); returns the seconds it took."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


class Settler:
    """Settles ``first_after_s`` after :meth:`start`, then every ``interval_s``, on a daemon
    thread until :meth:`stop`."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S,
                 first_after_s: float = FIRST_AFTER_S) -> None:
        self.interval_s = interval_s
        self.first_after_s = first_after_s
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gc-settle", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        wait = self.first_after_s
        while not self._halt.wait(wait):
            took = settle()
            log.debug("heap settled in %.0f ms (%d objects frozen)", took * 1000,
                      gc.get_freeze_count())
            wait = self.interval_s

    def stop(self) -> None:
        self._halt.set()
        gc.unfreeze()
