"""What a free share of a GPU is worth: prices from a packing LP over the share sizes seen.

The GPU-level problem of packing fractional tasks is one-dimensional bin packing with a
known (learned) distribution of item sizes. Its fluid relaxation is a small linear program
over *levels* (the free share a GPU can have): x(g, j) is how many items of size s_j go into
a GPU with g milli free, which moves that GPU to level g - s_j; a fresh GPU is level 1000.

    minimise   fresh GPUs opened            sum_j x(1000, j)
    subject to items placed                 sum_g x(g, j) = n_j           for every size j
               GPUs at a level come from    inflow(h) - outflow(h) >= 0  for 0 < h < 1000
               somewhere (the rest of a level's inflow stays at h: that is waste)

Its dual gives a price Y(h) for every level: what a GPU with h milli free is worth in fresh
GPUs (Y(1000) = 1, Y(0) = 0, Y(h) = 0 for a gap nothing will fill). The prices say which
items should fill which gaps: placing an item of size s into a GPU with g free destroys
Y(g) - Y(g - s) of value, and the LP's own plan only uses placements of least cost. The
*waste* of a free share, ``h - 1000 * Y(h)`` milli-GPU, is what the policy minimises.

The LP is tiny (about a hundred levels and twenty sizes) and solved here by a dense primal
simplex started from the trivial plan (every item on its own fresh GPU), so no solver
dependency is needed; it takes the item prices from the optimal basis and derives the level
prices from them (``_knapsack``). Deterministic: the same counts give the same prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gpupool.core.request import MILLI_PER_GPU

FloatArray = npt.NDArray[np.float64]

MAX_LEVELS = 240
"""Above this many reachable levels the sizes are rounded up to a coarser grid."""
MAX_PIVOTS = 20_000
_TOL = 1e-9


@dataclass(frozen=True)
class GapPrices:
    """Value and waste of every free share 0..1000 (milli-GPU), from one LP solve.

    ``value[h]`` is Y(h) in fresh GPUs; ``waste[h] = h - 1000 * value[h]``. ``optimal``
    is False when the solver gave up (then the prices are those of the last plan, still
    consistent but not optimal); ``fresh_gpus`` is the LP's objective.
    """

    value: FloatArray
    waste: FloatArray
    fresh_gpus: float
    optimal: bool
    item_price: Mapping[int, float] = field(default_factory=dict)
    """Price of each size given to the LP (in fresh GPUs): the dual of its row."""
    grid: int = 1
    """Sizes were rounded up to a multiple of this for the LP."""

    @classmethod
    def unknown(cls) -> GapPrices:
        """No sizes seen yet: every partial gap counts as waste (best fit behaviour)."""
        value = np.zeros(MILLI_PER_GPU + 1)
        value[MILLI_PER_GPU] = 1.0
        return cls(value, _waste(value), 0.0, True)

    def waste_if_only(self, sizes: Iterable[int]) -> FloatArray:
        """The waste of every free share when only tasks of ``sizes`` could fill it (for
        example, those whose CPU still fits the node), at the same item prices."""
        prices: dict[int, float] = {}
        for size in sizes:
            price = self.item_price.get(size)
            if price is not None:
                q = -(-size // self.grid) * self.grid
                prices[q] = max(prices.get(q, 0.0), price)
        ordered = sorted(prices)
        return _waste(_knapsack(ordered, [prices[q] for q in ordered]))


def _waste(value: FloatArray) -> FloatArray:
    waste = np.arange(MILLI_PER_GPU + 1, dtype=np.float64) - MILLI_PER_GPU * value
    waste[0] = 0.0
    waste[MILLI_PER_GPU] = 0.0
    return np.asarray(waste, dtype=np.float64)


def gap_prices(counts: Mapping[int, float]) -> GapPrices:
    """Prices for items of the given sizes (milli-GPU, 0 < size < 1000) and weights.

    Sizes that would make too many reachable levels are rounded *up* to a grid of 10, 20,
    ... milli (conservative: an item never looks smaller than it is).
    """
    items = {int(s): float(n) for s, n in counts.items() if 0 < s < MILLI_PER_GPU and n > 0}
    if not items:
        return GapPrices.unknown()
    grid = 1
    while True:
        sized: dict[int, float] = {}
        for s, n in items.items():
            q = -(-s // grid) * grid
            if q < MILLI_PER_GPU:
                sized[q] = sized.get(q, 0.0) + n
        levels = _reachable(sorted(sized))
        if len(levels) <= MAX_LEVELS or not sized:
            break
        grid = 10 if grid < 10 else grid * 2
    if not sized:
        return GapPrices.unknown()
    sizes = sorted(sized)
    prices, fresh, optimal = _solve(sizes, [sized[s] for s in sizes], levels)
    value = _knapsack(sizes, prices)
    price_of = dict(zip(sizes, prices, strict=True))
    item_price = {
        s: price_of[-(-s // grid) * grid] for s in items if -(-s // grid) * grid in price_of
    }
    return GapPrices(value, _waste(value), fresh, optimal, item_price, grid)


def _knapsack(sizes: list[int], prices: list[float]) -> FloatArray:
    """Y(h): the most valuable set of items (at the LP's item prices) that fits in h milli.

    These are the smallest level prices consistent with the item prices (the LP's dual is
    not unique at levels its plan never uses; the smallest is the cautious choice: a gap is
    worth only what could fill it). Y is non-decreasing, Y(0) = 0 and Y(1000) = 1.
    """
    value = [0.0] * (MILLI_PER_GPU + 1)
    pairs = sorted((s, max(0.0, p)) for s, p in zip(sizes, prices, strict=True))
    for h in range(1, MILLI_PER_GPU):
        best = value[h - 1]
        for s, p in pairs:
            if s > h:
                break
            v = p + value[h - s]
            if v > best:
                best = v
        value[h] = min(best, 1.0)
    value[MILLI_PER_GPU] = 1.0
    return np.array(value)


def _reachable(sizes: list[int]) -> list[int]:
    """Internal levels (0 < h < 1000) reachable from a fresh GPU with these sizes, ascending."""
    seen = np.zeros(MILLI_PER_GPU + 1, dtype=bool)
    seen[MILLI_PER_GPU] = True
    for h in range(MILLI_PER_GPU, 0, -1):
        if seen[h]:
            for s in sizes:
                if s <= h:
                    seen[h - s] = True
    return [h for h in range(1, MILLI_PER_GPU) if seen[h]]


def _solve(
    sizes: list[int], demand: list[float], levels: list[int]
) -> tuple[list[float], float, bool]:
    """Dense primal simplex on the level LP; returns (price of each size, objective,
    optimal). Rows: one per size (equalities), one per internal level."""
    n_items = len(sizes)
    row_of_level = {h: n_items + i for i, h in enumerate(levels)}
    columns: list[tuple[int, int]] = []  # (from level g, size index j); g = 1000 is fresh
    for g in [*levels, MILLI_PER_GPU]:
        for j, s in enumerate(sizes):
            if s <= g:
                columns.append((g, j))
    n_rows = n_items + len(levels)
    n_x = len(columns)
    n_cols = n_x + len(levels)  # then one waste column per level
    a = np.zeros((n_rows, n_cols))
    cost = np.zeros(n_cols)
    for c, (g, j) in enumerate(columns):
        a[j, c] = 1.0
        if g < MILLI_PER_GPU:
            a[row_of_level[g], c] -= 1.0  # leaves level g
        else:
            cost[c] = 1.0
        to = g - sizes[j]
        if to > 0:
            a[row_of_level[to], c] += 1.0  # arrives at level g - s
    for i in range(len(levels)):
        a[n_items + i, n_x + i] = -1.0  # waste: stays at the level for good
    b = np.zeros(n_rows)
    b[:n_items] = demand
    # Start: every item on a fresh GPU (x(1000, j) = n_j), waste at each level = its inflow.
    fresh_col = {j: c for c, (g, j) in enumerate(columns) if g == MILLI_PER_GPU}
    basis = [fresh_col[j] for j in range(n_items)] + [n_x + i for i in range(len(levels))]
    tableau = np.linalg.solve(a[:, basis], np.column_stack([a, b]))
    basis_arr = np.array(basis)
    reduced = cost - cost[basis_arr] @ tableau[:, :n_cols]
    optimal = False
    degenerate_run = 0
    for _ in range(MAX_PIVOTS):
        candidates = np.flatnonzero(reduced < -_TOL)
        if len(candidates) == 0:
            optimal = True
            break
        # Dantzig's rule; Bland's rule while stalling on degenerate pivots (no cycling).
        enter = int(candidates[0]) if degenerate_run > 50 else int(np.argmin(reduced))
        column = tableau[:, enter]
        positive = column > _TOL
        if not positive.any():  # unbounded cannot happen (objective >= 0); stop safely
            break
        ratios = np.full(n_rows, np.inf)
        ratios[positive] = tableau[positive, n_cols] / column[positive]
        best = ratios.min()
        ties = np.flatnonzero(ratios <= best + _TOL)
        leave = int(ties[np.argmin(basis_arr[ties])]) if len(ties) > 1 else int(ties[0])
        degenerate_run = degenerate_run + 1 if best <= _TOL else 0
        pivot_row = tableau[leave] / tableau[leave, enter]
        tableau -= np.outer(tableau[:, enter], pivot_row)
        tableau[leave] = pivot_row
        reduced = reduced - reduced[enter] * pivot_row[:n_cols]
        basis_arr[leave] = enter
    objective = float(cost[basis_arr] @ tableau[:, n_cols])
    duals = np.linalg.solve(a[:, basis_arr].T, cost[basis_arr])
    return [float(d) for d in duals[:n_items]], objective, optimal
