"""Team queues with a guaranteed quota, a borrowing limit and a lending limit, in milli-GPU,
grouped in cohorts: a quota tree of two levels (cohorts of teams) with one pure
``available()``.

* A queue may use up to its quota at any time (the scheduler reclaims borrowed capacity from
  other queues to honour that).
* Beyond its quota it *borrows*, up to its borrowing limit. A queue in a **cohort** borrows
  only what the other members of its cohort lend: each lends its unused quota, up to its
  lending limit (None: all of it), and what the members already borrow is taken from that.
  A queue without a cohort borrows from idle capacity anywhere (the cluster's free GPUs are
  the only bound), as before cohorts existed.
* Borrowed work is the first to be preempted when a lender of the same cohort (or, for
  queues without a cohort, any queue without one) needs its quota back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueQuota:
    name: str
    quota_milli: int
    borrow_limit_milli: int = 0
    cohort: str | None = None
    lend_limit_milli: int | None = None
    """The most of its unused quota the queue lends to its cohort (None: all of it)."""


class QuotaBook:
    """Usage per queue against its quota. Unknown queues have a zero quota and no cohort."""

    def __init__(self, queues: list[QueueQuota]) -> None:
        self.queues = {q.name: q for q in queues}
        self.usage: dict[str, int] = {q.name: 0 for q in queues}

    def _quota(self, queue: str) -> QueueQuota:
        return self.queues.get(queue) or QueueQuota(queue, 0, 0)

    def cohort_of(self, queue: str) -> str | None:
        return self._quota(queue).cohort

    def add(self, queue: str, amount: int) -> None:
        self.usage[queue] = self.usage.get(queue, 0) + amount

    def remove(self, queue: str, amount: int) -> None:
        self.usage[queue] = self.usage.get(queue, 0) - amount

    def borrowed(self, queue: str) -> int:
        """Milli-GPU the queue uses beyond its quota."""
        return max(0, self.usage.get(queue, 0) - self._quota(queue).quota_milli)

    def within_quota(self, queue: str, amount: int) -> bool:
        """Whether ``amount`` more keeps the queue inside its guaranteed quota."""
        return self.usage.get(queue, 0) + amount <= self._quota(queue).quota_milli

    def lendable(self, queue: str) -> int:
        """What the queue lends its cohort now: its unused quota, up to its lending limit."""
        q = self._quota(queue)
        free = max(0, q.quota_milli - self.usage.get(queue, 0))
        return free if q.lend_limit_milli is None else min(free, q.lend_limit_milli)

    def cohort_pool(self, queue: str) -> int | None:
        """What ``queue`` may still borrow from its cohort (the others' lendable quota less
        what the others already borrow), or None for a queue without a cohort."""
        cohort = self.cohort_of(queue)
        if cohort is None:
            return None
        lent = borrowed = 0
        for name, q in self.queues.items():
            if q.cohort == cohort and name != queue:
                lent += self.lendable(name)
                borrowed += self.borrowed(name)
        return max(0, lent - borrowed)

    def available(self, queue: str) -> int:
        """Milli-GPU the queue may still be admitted (its quota left, plus what it may
        borrow); a queue without a cohort is bounded only by its own limits."""
        q = self._quota(queue)
        used = self.usage.get(queue, 0)
        own = q.quota_milli + q.borrow_limit_milli - used
        pool = self.cohort_pool(queue)
        if pool is not None:
            own = min(own, max(0, q.quota_milli - used) + pool)
        return max(0, own)

    def refusal(self, queue: str, amount: int) -> str | None:
        """None if ``amount`` more may be admitted (possibly by borrowing), else the reason."""
        if amount <= self.available(queue):
            return None
        quota = self._quota(queue)
        used = self.usage.get(queue, 0)
        if used + amount <= quota.quota_milli + quota.borrow_limit_milli:
            return (
                f"queue {queue} would borrow more than cohort {quota.cohort} lends now: it "
                f"uses {gpus_text(used)} of {gpus_text(quota.quota_milli)} guaranteed GPUs, "
                f"the cohort lends {gpus_text(self.cohort_pool(queue) or 0)} more and this job "
                f"needs {gpus_text(amount)}"
            )
        return (
            f"queue {queue} would exceed its quota: it uses {gpus_text(used)} of "
            f"{gpus_text(quota.quota_milli)} guaranteed + {gpus_text(quota.borrow_limit_milli)} "
            f"borrowable GPUs and this job needs {gpus_text(amount)}"
        )

    def reclaimable(self, queue: str, others: Iterable[str]) -> list[str]:
        """Those of ``others`` (in their order) that ``may_reclaim_from`` says work may be
        reclaimed from for ``queue``."""
        cohort = self.cohort_of(queue)
        return [other for other in others if other != queue
                and self.cohort_of(other) == cohort and self.borrowed(other) > 0]

    def may_reclaim_from(self, queue: str, other: str) -> bool:
        """Whether work of ``other`` may be reclaimed for ``queue``: another queue of the same
        cohort (both without one counts as the same) that borrows now."""
        return (other != queue and self.cohort_of(other) == self.cohort_of(queue)
                and self.borrowed(other) > 0)


def gpus_text(milli: int) -> str:
    return f"{milli / 1000:g}"
