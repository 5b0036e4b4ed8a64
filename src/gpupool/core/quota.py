"""Team queues with a guaranteed quota and a borrowing limit, in milli-GPU.

A queue may use up to its quota at any time (the scheduler reclaims borrowed capacity from
other queues to honour that), and up to quota + borrow limit while others leave capacity
idle. Work beyond the quota is *borrowed* and is the first to be preempted when a lender
needs its quota back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueQuota:
    name: str
    quota_milli: int
    borrow_limit_milli: int = 0


class QuotaBook:
    """Usage per queue against its quota. Unknown queues have a zero quota."""

    def __init__(self, queues: list[QueueQuota]) -> None:
        self.queues = {q.name: q for q in queues}
        self.usage: dict[str, int] = {q.name: 0 for q in queues}

    def _quota(self, queue: str) -> QueueQuota:
        return self.queues.get(queue) or QueueQuota(queue, 0, 0)

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

    def refusal(self, queue: str, amount: int) -> str | None:
        """None if ``amount`` more may be admitted (possibly by borrowing), else the reason."""
        quota = self._quota(queue)
        used = self.usage.get(queue, 0)
        limit = quota.quota_milli + quota.borrow_limit_milli
        if used + amount <= limit:
            return None
        return (
            f"queue {queue} would exceed its quota: it uses {gpus_text(used)} of "
            f"{gpus_text(quota.quota_milli)} guaranteed + {gpus_text(quota.borrow_limit_milli)} "
            f"borrowable GPUs and this job needs {gpus_text(amount)}"
        )


def gpus_text(milli: int) -> str:
    return f"{milli / 1000:g}"
