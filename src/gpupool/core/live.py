"""A job as the queue cycle sees it (the server's live snapshot and the simulator share it),
what one cycle decides, and the reservation a waiting job may hold."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar, overload

from gpupool.core.cluster import Allocation, BoolArray
from gpupool.core.request import Gang, Request
from gpupool.core.scheduler import Decision, Scheduler

T = TypeVar("T")


class _memo(Generic[T]):
    """``functools.cached_property`` made cheap: Python 3.11's takes a lock on every first
    access and materialises the instance's ``__dict__``, which together cost more than
    computing a shape (the cycle reads ``shape`` of thousands of fresh jobs). The value is
    stored as an instance attribute of the same name, so later reads never reach this
    descriptor."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _memo[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | _memo[T]:
        if obj is None:
            return self
        value: T = self.func(obj)
        object.__setattr__(obj, self.name, value)
        return value


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity promised to a waiting job: ``nodes`` (a mask over the cluster's nodes) are
    expected to hold it from ``start_at`` (seconds, the caller's clock). Other jobs may start
    on those nodes only if they are sure to end before then (their time limit)."""

    job_id: int
    nodes: BoolArray
    start_at: float


@dataclass(eq=False)
class LiveJob:
    """A job as the cycle tracks it. ``allocations`` (one per node rank; one for a
    single-node job) are set while it holds resources. ``nodes`` > 1 makes it a gang of
    that many identical ``request`` members, one per node. ``time_limit_s``: the longest it
    may run (None: no limit; the server stops a job that reaches it)."""

    id: int
    queue: str
    priority: int
    created_at: float
    request: Request
    grace_s: float = 30.0
    allocations: tuple[Allocation, ...] = ()
    started_at: float = 0.0
    stopping: str | None = None
    reason: str = ""
    nominated: bool = False
    """Victims were preempted for this job: it goes first until it is placed, so the capacity
    they free is not taken by a job ordered before it."""
    nodes: int = 1
    user: str = ""
    time_limit_s: float | None = None
    reservation: Reservation | None = None
    """Set while the job holds a reservation (kept from cycle to cycle until it starts)."""
    quota_hold: float | None = None
    """Set while the job holds its queue's quota (when it is expected to be admitted): later
    jobs of its queue wait unless their time limit ends before then. Kept from cycle to
    cycle like ``reservation``; a holder is ordered first, as a reservation's is."""

    @property
    def amount(self) -> int:
        """Milli-GPU the job holds when running (all ranks)."""
        return self.request.total_gpu_milli * self.nodes

    @property
    def allocation(self) -> Allocation | None:
        """Rank 0's allocation (the only one of a single-node job), or None."""
        return self.allocations[0] if self.allocations else None

    @_memo
    def shape(self) -> tuple[object, ...]:
        """Everything that decides placement (the request's shape and the node count)."""
        return (*self.request.shape, self.nodes)

    def place(self, scheduler: Scheduler, exclude: BoolArray | None = None,
              explain: bool = True) -> Decision:
        """Place the job (all members of a gang, or none) on the scheduler's state, never
        on the nodes of ``exclude``."""
        if self.nodes == 1:
            return scheduler.place(self.request, exclude=exclude, explain=explain)
        return scheduler.place_gang(self.gang, exclude=exclude, explain=explain)

    @_memo
    def gang(self) -> Gang:
        """The multi-node job as a gang of one member per node (made once)."""
        members = tuple(replace(self.request, name=f"{self.request.name}/{rank}")
                        for rank in range(self.nodes))
        return Gang(self.request.name, members, distinct_nodes=True)

    def fits_somewhere(self, scheduler: Scheduler) -> bool:
        """Whether enough nodes pass the filters now (a cheap test, not a placement)."""
        return len(scheduler.feasible_nodes(self.request)) >= self.nodes

    def expected_end(self, default_run_s: float) -> float:
        """When the running job is expected to end: its start plus its time limit, or plus
        ``default_run_s`` when it has none."""
        limit = self.time_limit_s if self.time_limit_s is not None else default_run_s
        return self.started_at + limit


@dataclass
class CycleOutcome:
    placed: list[LiveJob] = field(default_factory=list)
    preemptions: list[tuple[LiveJob, LiveJob]] = field(default_factory=list)
    """(victim, the job it makes room for)."""
    reasons: dict[int, str] = field(default_factory=dict)
    reservations: dict[int, Reservation] = field(default_factory=dict)
    """The reservations held after this cycle, by job id (new or renewed)."""
    backfilled: dict[int, tuple[int, float]] = field(default_factory=dict)
    """Jobs placed on nodes reserved for another job, because their time limit ends before
    that reservation starts: job id -> (the reservation's job, when the limit ends)."""
    quota_holds: dict[int, float] = field(default_factory=dict)
    """Jobs refused by their queue's quota that hold it after this cycle: job id -> when
    enough of the queue's running work is expected to have ended for it to be admitted."""
    evaluated: int = 0
    errors: dict[int, Exception] = field(default_factory=dict)
    """Jobs whose judging raised (a policy bug or a hostile value): each stays pending with
    the reason "cannot be scheduled: ..." while the cycle goes on for the others."""


def error_reason(exc: BaseException) -> str:
    """The pending reason of a job whose judging raised ``exc``."""
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"cannot be scheduled: {what}"


def cycle_candidates(pending: Mapping[int, LiveJob], fresh: Sequence[LiveJob], dirty: bool
                     ) -> tuple[list[LiveJob], bool, list[LiveJob]]:
    """What a cycle tries, the same rule for the server and the simulator: (the jobs; whether
    that is every pending job; the other pending jobs whose reservation or quota hold
    stands). Every pending job when capacity or quota changed since the last cycle
    (``dirty``), else only those loaded since (``fresh``): old ones could not fit before and
    still cannot."""
    jobs = list(pending.values()) if dirty else [j for j in fresh if j.id in pending]
    chosen = {j.id for j in jobs}
    holders = [j for j in pending.values()
               if (j.reservation is not None or j.quota_hold is not None)
               and j.id not in chosen]
    return jobs, dirty, holders
