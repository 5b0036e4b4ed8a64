"""Fresh-GPU admission for loss systems: the last whole GPUs go to whole-GPU demand.

In the FGD replay protocol (and any *loss system*: an arrival that fits nowhere is lost, and
demand is expected to reach the cluster's capacity) every share that opens a fresh GPU
leaves the rest of that GPU to whatever fits beside it. An 810-milli share leaves 190 milli
that almost nothing fills. Early on that costs nothing: fresh GPUs are plenty. Near
saturation it does: the whole-GPU tasks still to come will want every fresh GPU, so the
810 takes a GPU a 1000 would have filled, and the cluster ends 190 milli poorer.

``FreshGpuAdmission`` is a filter that, for a GPU share, removes the nodes where the share
would need a *fresh* GPU (it may still go into a partly used one) when all of these hold:

1. **Poor fit.** The share's waste fraction on the packing LP's prices,
   ``1 - size / (1000 * price(size))``, is above the plan's average over all GPU demand
   seen (``price`` from ``gap_prices``: what the share costs in fresh GPUs once its
   expected gap-fillers are counted). 810s in openb qualify; 470s, which pair up, do not.
2. **Saturation, for whole-GPU tasks.** The fresh GPUs that the demand still to come
   will open before arrivals reach the cluster's capacity are at least the fresh GPUs left
   (counted per node up to what its free CPU serves at the mean CPU per whole GPU). That
   demand is the arrival mix seen so far times ``capacity - arrived``: whole-GPU tasks open
   a GPU each, well-fitting shares their LP price in GPUs. So every GPU kept is expected to
   be taken. And whole-GPU tasks must open at least as many fresh GPUs as the
   well-fitting shares do: a kept GPU must be more likely to go to a whole-GPU task (which
   fills it exactly, in place of a task that would fail) than to a share (which gains
   little over the 810 and, near the end, may leave its own gap unfilled).
3. **CPU to spare.** The free CPU covers both the CPU the arrival mix will ask for until
   capacity and, on top, the CPU of whole-GPU tasks on every kept GPU (those tasks are what
   the hold waits for, and they are CPU-heavier than the mix). Where CPU is tight, kept
   GPUs would end stranded, and the 810s they replace cost less CPU than the whole-GPU
   tasks that would take their place.

Everything is learned online from arrivals (each name counted once); nothing is known of the
future but the assumption that demand reaches capacity. That assumption is what makes it a
*loss-system* rule: a live server keeps unplaced jobs queued instead of losing them, and
holding a job while a GPU is free would only delay it, so the server's profile does not
include this filter (``PolicyContext.admission``). Design note: docs/design/placement-policy.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gpupool.core.cluster import BoolArray, ClusterState
from gpupool.core.framework import CycleState
from gpupool.core.request import MILLI_PER_GPU, Request
from gpupool.plugins.gap_prices import GapPrices


class FreshGpuAdmission:
    """Filter plugin (see the module docstring). ``prices`` returns the current packing-LP
    prices (the ``gpupool`` score's learned model), read at every decision."""

    name = "admission"

    def __init__(self, state: ClusterState, prices: Callable[[], GapPrices]) -> None:
        self._capacity = float(state.total_gpu_milli)
        self._prices = prices
        self._seen: set[str] = set()
        self._arrived_gpu = 0.0
        self._arrived_cpu = 0.0
        self._whole_gpus = 0.0
        self._whole_cpu = 0.0
        self._shares: dict[int, float] = {}
        self._plan_cache: tuple[GapPrices | None, int, tuple[float, float]] = (None, -1, (0, 0))
        self.refused = 0
        """Requests this filter alone left without a node (for reports)."""

    # ------------------------------------------------------------------ learning

    def observe(self, request: Request) -> None:
        """Count an arrival once per name (a pending task is offered again and again)."""
        if request.name in self._seen:
            return
        self._seen.add(request.name)
        self._arrived_gpu += request.total_gpu_milli
        self._arrived_cpu += request.cpu_milli
        if not request.num_gpus:
            return
        if request.is_sharing:
            self._shares[request.gpu_milli] = self._shares.get(request.gpu_milli, 0.0) + 1.0
        else:
            self._whole_gpus += request.num_gpus
            self._whole_cpu += request.cpu_milli

    def plan_waste_fraction(self, prices: GapPrices) -> float:
        """Average waste fraction of the GPU demand seen, at the LP's prices (whole GPUs
        waste nothing)."""
        return self._plan(prices)[0]

    def share_fresh_gpus(self, prices: GapPrices) -> float:
        """Fresh GPUs used by the well-fitting shares seen (waste fraction at most the
        average), at the LP's prices: a share's price is its part of a fresh GPU once its
        gap-fillers are counted."""
        return self._plan(prices)[1]

    def _plan(self, prices: GapPrices) -> tuple[float, float]:
        """(average waste fraction, fresh GPUs of well-fitting shares), cached per prices
        snapshot and number of arrivals seen."""
        cached_prices, cached_count, figures = self._plan_cache
        count = len(self._seen)
        if cached_prices is prices and cached_count == count:
            return figures
        used = paid = self._whole_gpus * MILLI_PER_GPU
        priced: list[tuple[int, float, float]] = []
        for size, n in self._shares.items():
            price = prices.item_price.get(size)
            if price is not None and price > 0:
                used += n * size
                paid += n * MILLI_PER_GPU * price
                priced.append((size, n, price))
        average = 1.0 - used / paid if paid > 0 else 0.0
        fresh = sum(
            n * price
            for size, n, price in priced
            if 1.0 - size / (MILLI_PER_GPU * price) <= average
        )
        figures = (average, fresh)
        self._plan_cache = (prices, count, figures)
        return figures

    # ------------------------------------------------------------------ deciding

    def holds_fresh_gpus(self, state: ClusterState, request: Request) -> bool:
        """True when ``request`` (a share) may not open a fresh GPU now."""
        if not request.is_sharing or not request.num_gpus or self._arrived_gpu <= 0:
            return False
        prices = self._prices()
        price = prices.item_price.get(request.gpu_milli)
        if price is None or price <= 0:
            return False
        waste_fraction = 1.0 - request.gpu_milli / (MILLI_PER_GPU * price)
        if waste_fraction <= self.plan_waste_fraction(prices):
            return False
        horizon = self._capacity - self._arrived_gpu
        if horizon <= 0 or not self._whole_gpus:
            return False
        kept = self.usable_fresh_gpus(state)
        cpu_to_come = self._arrived_cpu / self._arrived_gpu * horizon
        kept_cpu = kept * self._whole_cpu / self._whole_gpus
        if float(state.cpu_left.sum()) < cpu_to_come + kept_cpu:
            return False
        whole = self._whole_gpus
        shares = self.share_fresh_gpus(prices)
        if whole < shares:
            return False
        return (whole + shares) * horizon / self._arrived_gpu >= kept

    def usable_fresh_gpus(self, state: ClusterState) -> float:
        """Fully free GPUs, per node at most as many as its free CPU serves at the mean
        CPU per whole GPU of the whole-GPU tasks seen."""
        fresh = (state.gpu_left == MILLI_PER_GPU).sum(axis=1)
        if self._whole_cpu > 0:
            per_gpu = self._whole_cpu / self._whole_gpus
            fresh = np.minimum(fresh, np.floor(state.cpu_left / per_gpu))
        return float(fresh.sum())

    def filter(
        self, state: ClusterState, request: Request, cycle: CycleState, candidates: BoolArray
    ) -> BoolArray:
        self.observe(request)
        if not self.holds_fresh_gpus(state, request):
            return candidates
        partly_used = (state.gpu_left >= request.gpu_milli) & (state.gpu_left < MILLI_PER_GPU)
        kept = candidates & partly_used.any(axis=1)
        if candidates.any() and not kept.any():
            self.refused += 1
        return np.asarray(kept, dtype=bool)

    def explain(
        self, state: ClusterState, request: Request, cycle: CycleState, candidates: BoolArray
    ) -> list[str]:
        if not self.holds_fresh_gpus(state, request):
            return []
        gap = MILLI_PER_GPU - request.gpu_milli
        return [
            f"the last {int(self.usable_fresh_gpus(state))} fresh GPUs are kept for whole-GPU "
            f"tasks (this share would leave {gap} milli that few expected tasks fill)"
        ]
