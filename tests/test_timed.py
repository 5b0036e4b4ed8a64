"""The time-based simulator on tiny traces worked out by hand, and against a plain reference."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from gpupool.core.cluster import Allocation, ClusterState, GpuSpec, NodeSpec
from gpupool.core.frag import TargetWorkload
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import POLICIES, PolicyContext, build_profile
from gpupool.sim.timed import run_timed
from gpupool.sim.trace import TracePod

T4 = GpuSpec("T4", 16384)
ONE_GPU = [NodeSpec("solo", 8000, 32768, (T4,))]


def pod(
    name: str,
    created: int | None,
    deleted: int | None,
    gpus: int = 1,
    milli: int = 1000,
    cpu: int = 1000,
    priority: int = 0,
) -> TracePod:
    request = Request(name, cpu, 1024, gpus, milli if gpus else 0, priority=priority)
    return TracePod(request, creation_time=created, deletion_time=deleted)


def starts(pods: Sequence[TracePod], result_starts: Sequence[int | None]) -> dict[str, int | None]:
    return {p.request.name: s for p, s in zip(pods, result_starts, strict=True)}


# n0 has 2 GPUs, n1 one. Hand trace (times in seconds):
#   0   big (2 GPUs, 50 s) -> n0, the only 2-GPU node; one (1 GPU, 100 s) -> n1. Cluster full.
#   5   huge (4 GPUs) fits nowhere, ever: it heads the queue until the end.
#  10   mid (1 GPU, 30 s) waits.      20  half (0.5 GPU, 10 s) waits.
#  30   cpu (CPU only, 5 s) starts at once.  35  cpu leaves; nothing else fits.
#  50   big leaves: huge still fails, mid and half start behind it on n0 (delays 40 and 30).
#  60   half leaves.  80  mid leaves.  100  one leaves: the last event.
NODES = [NodeSpec("n0", 16000, 65536, (T4, T4)), NodeSpec("n1", 8000, 32768, (T4,))]
PODS = [
    pod("big", 0, 50, gpus=2),
    pod("one", 0, 100),
    pod("huge", 5, 500, gpus=4),
    pod("mid", 10, 40),
    pod("half", 20, 30, milli=500),
    pod("cpu", 30, 35, gpus=0),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_hand_trace_is_exact_for_every_policy(policy: str) -> None:
    result = run_timed(NODES, PODS, policy, seed=3, samples=11)
    assert starts(PODS, result.start_times) == {
        "big": 0,
        "one": 0,
        "huge": None,
        "mid": 50,
        "half": 50,
        "cpu": 30,
    }
    assert (result.pods, result.placed, result.never_placed) == (6, 5, 1)
    # Delays 0, 0, 40, 30, 0 -> sorted 0 0 0 30 40: mean 14, p50 0, p95 30 + 0.8 * 10.
    assert result.queue_delay_mean_s == 14.0
    assert result.queue_delay_p50_s == 0.0
    assert result.queue_delay_p95_s == pytest.approx(38.0)
    # GPU-seconds: big 2 x 50 + one 100 + mid 30 + half 0.5 x 10 + cpu 0 = 235.
    assert result.gpu_hours_served == pytest.approx(235 / 3600)
    assert result.times == tuple(float(t) for t in range(0, 101, 10))
    # Allocated of 3000 milli: 3000 until 50, then 2500 at 50, 2000 at 60, 1000 at 80, 0 at 100.
    expected = [3000] * 5 + [2500, 2000, 2000, 1000, 1000, 0]
    assert result.allocated_gpu_pct == pytest.approx([m / 30 for m in expected])
    # Attempts: 6 arrivals; at 35 the three waiting shapes; at 50 huge, mid, half; at 60, 80
    # and 100 only huge. An arrival is not tried again until something departs.
    assert result.decisions == 6 + 3 + 3 + 3


def test_departure_frees_capacity_for_the_waiting_pod_at_that_second() -> None:
    pods = [pod("first", 0, 100), pod("second", 7, 27)]
    result = run_timed(ONE_GPU, pods, "bestfit", seed=0, samples=3)
    assert result.start_times == (0, 100)
    assert (result.queue_delay_mean_s, result.queue_delay_p50_s) == (46.5, 46.5)
    # second waits 93 s, then runs its 20 s lifetime: the last event is at 120.
    assert result.times == (0.0, 60.0, 120.0)
    assert result.allocated_gpu_pct == (100.0, 100.0, 0.0)
    assert result.gpu_hours_served == pytest.approx(120 / 3600)


def test_higher_priority_waiting_pod_starts_first() -> None:
    pods = [
        pod("running", 0, 100),
        pod("low", 10, 20, priority=0),
        pod("high", 20, 70, priority=5),
    ]
    result = run_timed(ONE_GPU, pods, "bestfit", seed=0)
    # At 100 high (priority 5) goes first and runs 50 s; low starts when it leaves.
    assert starts(pods, result.start_times) == {"running": 0, "low": 150, "high": 100}
    assert result.queue_delay_mean_s == pytest.approx((0 + 140 + 80) / 3)


@pytest.mark.parametrize(
    ("arrival_priority", "winner"), [(0, "queued"), (1, "arrival")], ids=["fifo", "priority"]
)
def test_arrival_at_a_departure_sees_the_freed_capacity(arrival_priority: int, winner: str) -> None:
    pods = [
        pod("running", 0, 100),
        pod("queued", 50, 60),
        pod("arrival", 100, 110, priority=arrival_priority),
    ]
    result = run_timed(ONE_GPU, pods, "fgd", seed=1)
    got = starts(pods, result.start_times)
    assert got["running"] == 0
    assert got[winner] == 100
    loser = "arrival" if winner == "queued" else "queued"
    assert got[loser] == 110


def test_arrival_with_no_one_waiting_starts_at_a_departure_second() -> None:
    pods = [pod("a", 0, 10), pod("b", 10, 11)]
    result = run_timed(ONE_GPU, pods, "bestfit", seed=0)
    assert result.start_times == (0, 10)
    assert result.queue_delay_p95_s == 0.0


def test_lifetime_is_at_least_one_second() -> None:
    pods = [pod("instant", 5, 5), pod("next", 5, 9)]
    result = run_timed(ONE_GPU, pods, "bestfit", seed=0)
    assert result.start_times == (5, 6)
    assert result.gpu_hours_served == pytest.approx(5 / 3600)


@pytest.mark.parametrize(
    ("created", "deleted", "column"), [(None, 9, "creation"), (3, None, "deletion")]
)
def test_missing_times_name_the_pod(created: int | None, deleted: int | None, column: str) -> None:
    pods = [pod("fine", 0, 5), pod("openb-pod-0042", created, deleted)]
    with pytest.raises(ValueError, match=rf"'openb-pod-0042'.*{column}_time"):
        run_timed(ONE_GPU, pods, "bestfit", seed=0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one pod"):
        run_timed(ONE_GPU, [], "bestfit", seed=0)
    with pytest.raises(ValueError, match="samples"):
        run_timed(ONE_GPU, [pod("a", 0, 1)], "bestfit", seed=0, samples=0)


def test_to_json_is_plain_json() -> None:
    result = run_timed(NODES, PODS, "fgd", seed=0, samples=5)
    data = json.loads(json.dumps(result.to_json()))
    assert data["policy"] == "fgd"
    assert data["never_placed"] == 1
    assert data["times"] == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert len(data["allocated_gpu_pct"]) == 5
    assert data["decisions"] == result.decisions


def replay_scheduler(
    nodes: Sequence[NodeSpec], pods: Sequence[TracePod], policy: str, seed: int
) -> tuple[ClusterState, Scheduler]:
    """A fresh cluster and scheduler set up as ``run_timed`` sets them up."""
    rng = np.random.default_rng(seed)
    state = ClusterState(nodes)
    tie: list[int] = rng.permutation(state.num_nodes).tolist()
    workload = TargetWorkload.from_requests(p.request for p in pods) if policy == "fgd" else None
    return state, Scheduler(state, build_profile(policy, state, PolicyContext(rng, workload)),
                            tie)


def reference_starts(
    nodes: Sequence[NodeSpec], pods: Sequence[TracePod], policy: str, seed: int
) -> list[int | None]:
    """The rules read literally: second by second, departures, then arrivals join the queue,
    then the whole queue is walked in order, skipping shapes that failed in this walk."""
    state, scheduler = replay_scheduler(nodes, pods, policy, seed)
    order = sorted(range(len(pods)), key=lambda i: (pods[i].creation_time or 0, i))
    seq = {i: s for s, i in enumerate(order)}
    begun: list[int | None] = [None] * len(pods)
    running: dict[int, tuple[int, Allocation]] = {}
    queue: list[int] = []
    last_arrival = max(p.creation_time or 0 for p in pods)
    now = 0
    while now <= last_arrival or running:
        for i, (end, allocation) in list(running.items()):
            if end == now:
                state.release(allocation)
                del running[i]
        queue += [i for i in order if pods[i].creation_time == now]
        failed: set[object] = set()
        for i in sorted(queue, key=lambda i: (-pods[i].request.priority, seq[i])):
            request = pods[i].request
            if request.shape in failed:
                continue
            decision = scheduler.place(request)
            if not decision.placed:
                failed.add(request.shape)
                continue
            queue.remove(i)
            life = max(1, (pods[i].deletion_time or 0) - (pods[i].creation_time or 0))
            running[i] = (now + life, decision.allocations[0])
            begun[i] = now
        now += 1
    return begun


def random_traces(seed: int, count: int = 4) -> Iterator[list[TracePod]]:
    """``count`` traces of 40 pods of assorted shapes and priorities, arriving in 40 s."""
    gen = np.random.default_rng(seed)
    shapes = [(0, 0), (1, 250), (1, 500), (1, 1000), (2, 1000), (4, 1000), (8, 1000)]
    for _ in range(count):
        pods = []
        for k in range(40):
            gpus, milli = shapes[int(gen.integers(len(shapes)))]
            created = int(gen.integers(0, 40))
            pods.append(pod(f"p{k}", created, created + int(gen.integers(0, 30)), gpus=gpus,
                            milli=milli, cpu=int(gen.choice([1000, 4000])),
                            priority=int(gen.integers(0, 3))))
        yield pods


MIXED = [NodeSpec("a", 8000, 32768, (T4,)), NodeSpec("b", 16000, 65536, (T4, T4)),
         NodeSpec("c", 32000, 131072, (T4,) * 4)]


@pytest.mark.parametrize("policy", ["bestfit", "fgd", "random"])
def test_matches_the_literal_reference_on_random_traces(policy: str) -> None:
    for trial, pods in enumerate(random_traces(11)):
        result = run_timed(MIXED, pods, policy, seed=trial)
        assert list(result.start_times) == reference_starts(MIXED, pods, policy, trial)
        assert result.placed + result.never_placed == len(pods)


def shared_cycle_starts(
    nodes: Sequence[NodeSpec], pods: Sequence[TracePod], policy: str, seed: int
) -> list[int | None]:
    """The same replay with each second's queue handled by the shared cycle the server runs
    (``core.queue_cycle.run_cycle``, greedy FIFO: priority, then first come; no reservations),
    the pods as the jobs of one queue without a quota limit."""
    from gpupool.core.live import LiveJob
    from gpupool.core.queue_cycle import run_cycle
    from gpupool.core.queue_order import GREEDY_FIFO
    from gpupool.core.quota import QueueQuota, QuotaBook

    _state, scheduler = replay_scheduler(nodes, pods, policy, seed)
    order = sorted(range(len(pods)), key=lambda i: (pods[i].creation_time or 0, i))
    book = QuotaBook([QueueQuota("pods", 10**9, 0)])
    jobs = {i: LiveJob(seq, "pods", pods[i].request.priority, float(seq), pods[i].request,
                       grace_s=0.0) for seq, i in enumerate(order)}
    pod_of = {job.id: i for i, job in jobs.items()}
    begun: list[int | None] = [None] * len(pods)
    running: dict[int, int] = {}  # pod -> its end
    pending: list[LiveJob] = []
    last_arrival = max(p.creation_time or 0 for p in pods)
    now = 0
    while now <= last_arrival or running:
        for i, end in list(running.items()):
            if end == now:
                for allocation in jobs[i].allocations:
                    scheduler.release(allocation)
                book.remove("pods", jobs[i].amount)
                del running[i]
        pending += [jobs[i] for i in order if pods[i].creation_time == now]
        out = run_cycle(scheduler, book, pending, [jobs[i] for i in running], now=now,
                        policy=GREEDY_FIFO)
        for job in out.placed:
            i = pod_of[job.id]
            life = max(1, (pods[i].deletion_time or 0) - (pods[i].creation_time or 0))
            running[i] = now + life
            begun[i] = now
        pending = [j for j in pending if begun[pod_of[j.id]] is None]
        now += 1
    return begun


@pytest.mark.parametrize("policy", ["bestfit", "fgd", "gpupool", "random"])
def test_the_time_based_mode_decides_as_the_servers_shared_cycle(policy: str) -> None:
    """The pod replay keeps its own fast event loop (waiting pods kept per shape); it starts
    exactly the pods, at exactly the seconds and in the order, that the server's cycle would."""
    for trial, pods in enumerate(random_traces(5)):
        result = run_timed(MIXED, pods, policy, seed=trial)
        assert list(result.start_times) == shared_cycle_starts(MIXED, pods, policy, trial)
