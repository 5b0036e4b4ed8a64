"""Figures of a multi-team run: per-job records in, JCT, waits, allocation and fairness out.

Definitions (``team_metrics``), all in seconds of simulated time:

* JCT = end − submit over finished jobs (``end`` set); wait = start − submit over started
  jobs (``start`` is the *first* start); p50/p95 interpolate linearly between ranks (numpy's
  default). A figure over no jobs is 0.0, as in ``sim.timed``.
* makespan = the last end − the first submit (0.0 when nothing finished).
* GPU-seconds of a job = gpus × the time it held them: the sum of its ``attempts`` when the
  engine gives them (every run, preempted ones included), else end − start (a job started
  and not finished: up to the last event of the run). Without ``attempts`` a preempted job
  counts as holding its GPUs from its first start to its final end, an upper bound.
  ``gpu_alloc_pct`` = Σ GPU-seconds ÷ (capacity × makespan) × 100.
* ``jain_fairness``: Jain's index (Σx)² / (n Σx²) over the n teams that have jobs, of
  x = GPU-seconds ÷ weight, counting only the time in which *every* such team has work
  waiting (a job submitted, not running and not ended: not yet started, or between two
  ``attempts``): the contended time, where a fair scheduler should split the cluster by
  weight. When there is no contended time (a team never waits, or one team only), it is
  taken over the whole run. 1.0 is a split exactly by weight, 1/n one team holding
  everything; 1.0 too when nobody held anything. A job never started waits until the last
  event of the run.
* ``jain_while_waiting``: the time-weighted mean, over the moments when at least two teams
  have work waiting, of Jain's index of x = GPUs held ÷ weight over *those* teams (1.0 when
  there is no such moment). ``jain_fairness`` needs every team waiting at once, which a
  skewed workload may never have (it then falls back to the whole run and measures the
  demand's skew, not the scheduler).
* ``teams``: per team of the queue list (also those without jobs) ``jct_mean_s``,
  ``wait_p95_s`` and ``gpu_seconds`` (over the whole run).

Everything is computed exactly by one sweep over the start/end/submit events, not by sampling.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpupool.sim.workload import TeamQueue


@dataclass(frozen=True, slots=True)
class JobRecord:
    """What happened to one job: submitted at ``submit``, first started at ``start`` (None:
    never), finished at ``end`` (None: not finished), holding ``gpus`` GPUs in all (0.5 for a
    half card, 8 for 2 nodes × 4), preempted ``preemptions`` times in between. ``attempts``
    (optional) are the (start, end) intervals of every run, in order; empty means one run
    from ``start`` to ``end``."""

    job_id: str
    team: str
    user: str
    submit: float
    start: float | None
    end: float | None
    gpus: float
    preemptions: int = 0
    attempts: tuple[tuple[float, float], ...] = ()


METRIC_KEYS = (
    "jct_mean_s", "jct_p95_s", "wait_p50_s", "wait_p95_s", "wait_max_s", "makespan_s",
    "gpu_alloc_pct", "jain_fairness", "jain_while_waiting", "preemptions", "never_started",
    "teams",
)
"""The keys of ``team_metrics``' result, in its order."""


def team_metrics(records: Sequence[JobRecord], teams: Sequence[TeamQueue],
                 capacity_gpus: float, samples: int = 200) -> dict[str, Any]:
    """The figures of the module over ``records`` (keys ``METRIC_KEYS``; floats, and ints for
    ``preemptions`` and ``never_started``). ``ValueError`` for a record whose team is not in
    ``teams``, a start before the submit or an end before the start, or a capacity <= 0.

    ``samples`` is accepted for the engine's call and checked (>= 1) but not used: the sweep
    is exact, so no sampling of the timeline is needed.
    """
    if not capacity_gpus > 0:
        raise ValueError(f"capacity_gpus must be positive, got {capacity_gpus}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    weight = {t.name: t.weight for t in teams}
    for r in records:
        _check(r, weight)
    started = [r for r in records if r.start is not None]
    jct = [r.end - r.submit for r in records if r.end is not None]
    wait = [r.start - r.submit for r in started if r.start is not None]
    ends = [r.end for r in records if r.end is not None]
    makespan = max(ends) - min(r.submit for r in records) if ends else 0.0
    horizon = _horizon(records)
    held = sum(_held(r, horizon) for r in records)
    by_team: dict[str, list[JobRecord]] = {name: [] for name in weight}
    for r in records:
        by_team[r.team].append(r)
    per_team: dict[str, dict[str, float]] = {}
    for name, mine in by_team.items():
        per_team[name] = {
            "jct_mean_s": _mean([r.end - r.submit for r in mine if r.end is not None]),
            "wait_p95_s": _pct([r.start - r.submit for r in mine if r.start is not None], 95),
            "gpu_seconds": float(sum(_held(r, horizon) for r in mine)),
        }
    return {
        "jct_mean_s": _mean(jct),
        "jct_p95_s": _pct(jct, 95),
        "wait_p50_s": _pct(wait, 50),
        "wait_p95_s": _pct(wait, 95),
        "wait_max_s": float(max(wait)) if wait else 0.0,
        "makespan_s": float(makespan),
        "gpu_alloc_pct": 100.0 * held / (capacity_gpus * makespan) if makespan > 0 else 0.0,
        "jain_fairness": jain_fairness(records, weight),
        "jain_while_waiting": jain_while_waiting(records, weight),
        "preemptions": sum(r.preemptions for r in records),
        "never_started": len(records) - len(started),
        "teams": per_team,
    }


def _check(r: JobRecord, weight: dict[str, float]) -> None:
    if r.team not in weight:
        raise ValueError(f"job {r.job_id!r} is of team {r.team!r}, which has no queue "
                         f"(queues: {', '.join(weight) or 'none'})")
    if r.start is not None and r.start < r.submit:
        raise ValueError(f"job {r.job_id!r} starts at {r.start} before its submit {r.submit}")
    if r.end is not None and (r.start is None or r.end < r.start):
        raise ValueError(f"job {r.job_id!r} ends at {r.end} without a start at or before it")
    last = r.submit
    for begin, end in r.attempts:
        if not last <= begin <= end:
            raise ValueError(f"job {r.job_id!r}: attempt ({begin}, {end}) is not after its "
                             "submit and the attempts before it, or ends before it begins")
        last = end


def _horizon(records: Sequence[JobRecord]) -> float:
    """The time of the last event of the run (0.0 for no records)."""
    times = [t for r in records for t in (r.submit, r.start, r.end) if t is not None]
    times += [end for r in records for _, end in r.attempts]
    return max(times, default=0.0)


def _runs(r: JobRecord, horizon: float) -> tuple[tuple[float, float], ...]:
    """The intervals in which ``r`` held its GPUs (a run without an end: to ``horizon``)."""
    if r.attempts:
        return r.attempts
    if r.start is None:
        return ()
    return ((r.start, horizon if r.end is None else r.end),)


def _held(r: JobRecord, horizon: float) -> float:
    return r.gpus * sum(end - begin for begin, end in _runs(r, horizon))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def jain_fairness(records: Sequence[JobRecord], weight: dict[str, float]) -> float:
    """Jain's index of GPU-seconds ÷ weight over the contended time (see the module)."""
    names = sorted({r.team for r in records})
    if len(names) < 2:
        return 1.0
    index = {n: i for i, n in enumerate(names)}
    horizon = _horizon(records)
    # (time, order, team, d_waiting, d_gpus); at equal times holdings change before waiting
    # counts, which does not matter for the integral (zero-length steps add nothing).
    events: list[tuple[float, int, int, int, float]] = []
    for r in records:
        team = index[r.team]
        waits_from = r.submit
        for begin, end in _runs(r, horizon):
            events.append((begin, 1, team, 0, r.gpus))
            events.append((end, 0, team, 0, -r.gpus))
            if begin > waits_from:
                events += [(waits_from, 1, team, 1, 0.0), (begin, 1, team, -1, 0.0)]
            waits_from = end
        stop = horizon if r.end is None else r.end
        if stop > waits_from:
            events += [(waits_from, 1, team, 1, 0.0), (stop, 1, team, -1, 0.0)]
    events.sort(key=lambda e: (e[0], e[1]))
    waiting = [0] * len(names)
    holding = [0.0] * len(names)
    contended = np.zeros(len(names))
    whole = np.zeros(len(names))
    last = events[0][0]
    for time, _, team, d_wait, d_gpus in [*events, (horizon, 2, -1, 0, 0.0)]:
        if time > last:
            step = np.array(holding) * (time - last)
            whole += step
            if all(waiting):
                contended += step
            last = time
        if team >= 0:
            waiting[team] += d_wait
            holding[team] += d_gpus
    share = contended if contended.any() else whole
    x = share / np.array([weight[n] for n in names])
    total = float(np.sum(x * x))
    return float(np.sum(x) ** 2 / (len(x) * total)) if total > 0 else 1.0


def jain_while_waiting(records: Sequence[JobRecord], weight: dict[str, float]) -> float:
    """Jain's index of held GPUs ÷ weight among the teams waiting at each moment, averaged
    over the time when two or more wait (see the module)."""
    names = sorted({r.team for r in records})
    if len(names) < 2:
        return 1.0
    index = {n: i for i, n in enumerate(names)}
    horizon = _horizon(records)
    events: list[tuple[float, int, int, float]] = []  # (time, team, d_waiting, d_gpus)
    for r in records:
        team = index[r.team]
        waits_from = r.submit
        for begin, end in _runs(r, horizon):
            events += [(begin, team, 0, r.gpus), (end, team, 0, -r.gpus)]
            if begin > waits_from:
                events += [(waits_from, team, 1, 0.0), (begin, team, -1, 0.0)]
            waits_from = end
        stop = horizon if r.end is None else r.end
        if stop > waits_from:
            events += [(waits_from, team, 1, 0.0), (stop, team, -1, 0.0)]
    if not events:
        return 1.0
    events.sort(key=lambda e: e[0])
    waiting = [0] * len(names)
    holding = [0.0] * len(names)
    weights = [weight[n] for n in names]
    total = weighted = 0.0
    last = events[0][0]
    for time, team, d_wait, d_gpus in events:
        if time > last:
            x = [holding[i] / weights[i] for i in range(len(names)) if waiting[i]]
            if len(x) >= 2:
                total += time - last
                square = sum(v * v for v in x)
                weighted += (time - last) * (sum(x) ** 2 / (len(x) * square) if square else 1.0)
            last = time
        waiting[team] += d_wait
        holding[team] += d_gpus
    return weighted / total if total > 0 else 1.0


def wait_over_time(records: Sequence[JobRecord], bins: int
                   ) -> dict[str, list[tuple[float, float]]]:
    """For a plot: per team (in order of first appearance), (bin centre, mean wait of the
    team's jobs that started in the bin) over ``bins`` equal bins spanning the first to the
    last start; bins where the team started nothing are left out. ``ValueError`` for
    ``bins`` < 1."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    started = [r for r in records if r.start is not None]
    if not started:
        return {}
    starts = np.array([r.start for r in started], dtype=np.float64)
    lo, hi = float(starts.min()), float(starts.max())
    width = (hi - lo) / bins or 1.0
    slots = np.minimum(((starts - lo) / width).astype(np.int64), bins - 1)
    sums: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for r, slot in zip(started, slots.tolist(), strict=True):
        assert r.start is not None
        acc = sums[r.team].setdefault(slot, [0.0, 0.0])
        acc[0] += r.start - r.submit
        acc[1] += 1
    return {team: [(lo + (slot + 0.5) * width, acc[0] / acc[1])
                   for slot, acc in sorted(slot_map.items())]
            for team, slot_map in sums.items()}
