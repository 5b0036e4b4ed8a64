"""Fair share: who borrows idle capacity first, and whose borrowed work is reclaimed first.

Each team has a weight (default 1). A team's **fair-share load** is

    (dominant GPUs held now + decayed GPU-seconds used / half-life) / weight

and the team with the lowest load goes first; inside a team, users compare the same way
(weight 1 each). Held work counts by its *dominant* share (DRF): a job asking for a larger
share of the pool's CPU or memory than of its GPUs counts as that share of the pool's GPUs.
Past usage decays exponentially with a half-life (Slurm's default: 7 days), so a team that
ran a lot last week yields to one that did not, while what is held now dominates over a
short horizon: two teams of equal weight that both have work waiting converge to equal
halves as jobs end. Usage divided by the half-life has the unit of GPUs (a team that held
g GPUs for a long time has g / ln 2 of it).

Pure: times are the caller's clock (seconds), never read here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gpupool.core.cluster import ClusterState
from gpupool.core.request import MILLI_PER_GPU, Request

DEFAULT_HALF_LIFE_S = 7 * 86400.0
MIN_WEIGHT = 1e-3
"""Weights are floored here: a load divided by a vanishing weight stays finite."""


def decayed_gpu_seconds(gpus: float, start: float, end: float, now: float,
                        half_life_s: float) -> float:
    """∫ gpus · 2^(-(now - t) / half_life) dt over [start, end] (end ≤ now): GPU-seconds
    used in that interval, each second weighted by how long ago it was."""
    if end <= start:
        return 0.0
    k = math.log(2) / half_life_s
    return gpus / k * (math.exp(-k * (now - end)) - math.exp(-k * (now - start)))


def pool_totals(state: ClusterState) -> tuple[int, int, int]:
    """The pool's milli-GPU, milli-CPU and MiB of memory (each at least 1)."""
    return (max(1, state.total_gpu_milli), int(state.cpu_cap.sum()) or 1,
            int(state.mem_cap.sum()) or 1)


def dominant_milli(request: Request, members: int, totals: tuple[int, int, int]) -> int:
    """The job's dominant share of the pool (``totals`` from :func:`pool_totals`), in
    milli-GPU of the pool: max over GPU, CPU and memory of (asked / the pool's total),
    times the pool's GPUs."""
    gpu_total, cpu_total, mem_total = totals
    gpu = request.total_gpu_milli * members
    share = max(gpu / gpu_total, request.cpu_milli * members / cpu_total,
                request.memory_mib * members / mem_total)
    return max(gpu, round(share * gpu_total))


@dataclass
class FairShare:
    """Weights and decayed past usage per team and per (team, user).

    ``usage`` values are decayed GPU-seconds as of ``as_of``; ``charge`` and ``decay_to``
    move them forward in time. The cycle adds what is held now."""

    weights: dict[str, float] = field(default_factory=dict)
    half_life_s: float = DEFAULT_HALF_LIFE_S
    team_usage: dict[str, float] = field(default_factory=dict)
    user_usage: dict[tuple[str, str], float] = field(default_factory=dict)
    as_of: float = 0.0

    def weight(self, team: str) -> float:
        """The team's weight (1 when unknown), never below ``MIN_WEIGHT``."""
        return max(MIN_WEIGHT, self.weights.get(team, 1.0))

    def decay_to(self, now: float) -> None:
        """Age every stored usage to ``now``."""
        if now <= self.as_of:
            return
        factor = 0.5 ** ((now - self.as_of) / self.half_life_s)
        for usage in (self.team_usage, self.user_usage):
            for key in usage:
                usage[key] *= factor  # type: ignore[index]
        self.as_of = now

    def charge(self, team: str, user: str, gpus: float, start: float, end: float) -> None:
        """Record that (team, user) held ``gpus`` from ``start`` to ``end`` (≤ ``as_of``
        after ``decay_to(end)``)."""
        self.decay_to(end)
        used = decayed_gpu_seconds(gpus, start, end, self.as_of, self.half_life_s)
        self.team_usage[team] = self.team_usage.get(team, 0.0) + used
        self.user_usage[(team, user)] = self.user_usage.get((team, user), 0.0) + used

    def team_load(self, team: str, held_milli: float) -> float:
        """The team's fair-share load (lower goes first)."""
        past = self.team_usage.get(team, 0.0) / self.half_life_s
        return (held_milli / MILLI_PER_GPU + past) / self.weight(team)

    def user_load(self, team: str, user: str, held_milli: float) -> float:
        past = self.user_usage.get((team, user), 0.0) / self.half_life_s
        return held_milli / MILLI_PER_GPU + past
