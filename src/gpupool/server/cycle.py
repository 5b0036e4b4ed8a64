"""The live server's call into the shared queue cycle (core/queue_cycle.py): the same
function the simulator runs, with the server's one addition, a wall-clock time budget."""

from __future__ import annotations

import time
from collections.abc import Sequence

from gpupool.core.fairshare import FairShare
from gpupool.core.live import CycleOutcome, LiveJob, error_reason
from gpupool.core.queue_cycle import run_cycle as core_cycle
from gpupool.core.queue_order import GREEDY_FIFO, QueuePolicy
from gpupool.core.quota import QuotaBook
from gpupool.core.scheduler import Scheduler
from gpupool.core.victims import find_victims

__all__ = ["CycleOutcome", "LiveJob", "error_reason", "find_victims", "run_cycle"]


def run_cycle(
    scheduler: Scheduler,
    quota: QuotaBook,
    pending: list[LiveJob],
    running: list[LiveJob],
    budget_s: float | None = None,
    *,
    now: float = 0.0,
    policy: QueuePolicy = GREEDY_FIFO,
    shares: FairShare | None = None,
    holders: Sequence[LiveJob] = (),
    complete: bool = True,
) -> CycleOutcome:
    """``core.queue_cycle.run_cycle`` that stops trying more jobs once ``budget_s`` seconds
    of wall time have passed (the rest wait for the next step)."""
    over_budget = None
    if budget_s is not None:
        deadline = time.perf_counter() + budget_s

        def over_budget() -> bool:
            return time.perf_counter() > deadline

    return core_cycle(scheduler, quota, pending, running, now=now, policy=policy,
                      shares=shares, holders=holders, complete=complete,
                      over_budget=over_budget)
