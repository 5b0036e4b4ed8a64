"""From one NVML reading to figures per GPU and per running attempt, the idle window, and the
per-attempt tallies that become the usage record's measured columns. Pure: no I/O, no clock
(times are arguments), so every rule here is tested without a GPU.

Definitions (docs/guide/administration.md, "GPU utilisation"):

- a card's **busy share** for an attempt: the sum of its processes' SM shares on that card
  (NVML's per-process utilisation), at most 1; where the card does not report per-process
  utilisation, the card's own utilisation when the attempt is the only one holding that
  card, else unknown;
- an attempt's **utilisation**: its busy shares summed over its cards, divided by the GPUs
  it was allocated (0.5 for half a card), at most 1; unknown when any card of its
  allocation is unknown (only the cards of its allocation count: its CUDA devices);
- **used GPU-seconds**: utilisation × allocated GPUs × seconds, summed sample by sample
  (each sample counts for the time since the attempt's previous one, at most
  ``MAX_GAP_FACTOR`` sampling intervals, so a pause of the sampler is not counted as use);
- **memory**: the bytes NVML reports for its processes, summed; the peak kept is the
  largest on any one card (what the per-GPU memory limit bounds);
- **idle**: utilisation below ``IDLE_BELOW`` in every sample for ``idle_after_s`` seconds;
  the flag says since when it has been low.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gpupool.executors.nvml_sampler import NvmlReading

IDLE_BELOW = 0.05
"""An attempt whose utilisation is below this is idle (and a notebook's GPU is not busy)."""
MAX_GAP_FACTOR = 3.0
"""A sample counts for at most this many sampling intervals since the attempt's last one."""


@dataclass(frozen=True)
class CardShare:
    """One card an attempt holds: the node and the node's GPU index (the scheduler's), the
    physical card (NVML's index) and the milli-GPUs held on it."""

    node: str
    gpu: int
    card: int
    milli: int


@dataclass(frozen=True)
class Attempt:
    """A running attempt as the sampler needs it. ``ledger``: bytes per device ordinal
    from the interposer's ledger, of the attempt's live processes (None: no ledger)."""

    job_id: int
    attempt: int
    cards: tuple[CardShare, ...]
    ledger: tuple[int, ...] | None = None

    @property
    def gpus(self) -> float:
        return sum(c.milli for c in self.cards) / 1000


@dataclass(frozen=True)
class GpuFigure:
    """One GPU of a node: utilisation (0..1) and memory used, as NVML reports the card."""

    node: str
    gpu: int
    utilization: float
    memory_used_bytes: int


@dataclass(frozen=True)
class JobFigure:
    """One attempt in one sample: utilisation of its allocation (None: unknown), memory of
    its processes in total and on its fullest card (None: unknown)."""

    job_id: int
    attempt: int
    gpus: float
    utilization: float | None
    memory_bytes: int | None
    card_memory_bytes: int | None


def gpu_figures(reading: NvmlReading,
                physical: Mapping[str, tuple[int, ...]]) -> list[GpuFigure]:
    """Each node's GPUs (``physical[node][gpu]`` is the card's NVML index) as the reading
    tells; GPUs whose card was not read are left out."""
    rows = []
    for node, cards in sorted(physical.items()):
        for gpu, index in enumerate(cards):
            card = reading.card(index)
            if card is not None:
                rows.append(GpuFigure(node, gpu, card.utilization, card.memory_used_bytes))
    return rows


def job_figures(reading: NvmlReading, attempts: Iterable[Attempt],
                owner: Mapping[int, int]) -> list[JobFigure]:
    """Every attempt's figures in this reading (module docstring). ``owner``: host pid →
    job id (``proc_tree.owners``); an attempt's processes are the pids owned by its job."""
    attempts = list(attempts)
    holders: dict[int, set[int]] = defaultdict(set)
    for a in attempts:
        for share in a.cards:
            holders[share.card].add(a.job_id)
    busy: dict[tuple[int, int], float] = defaultdict(float)
    memory: dict[tuple[int, int], int] = defaultdict(int)
    unknown_memory: set[int] = set()
    for proc in reading.processes:
        job = owner.get(proc.pid)
        if job is None:
            continue
        if proc.sm is not None:
            busy[(job, proc.card)] += proc.sm
        if proc.memory_bytes is None:
            unknown_memory.add(job)
        else:
            memory[(job, proc.card)] += proc.memory_bytes
    figures = []
    for a in attempts:
        total = 0.0
        known = True
        for index in {s.card for s in a.cards}:
            card = reading.card(index)
            if card is None:
                known = False
            elif card.process_util:
                total += min(1.0, busy.get((a.job_id, index), 0.0))
            elif holders.get(index) == {a.job_id}:
                total += card.utilization
            else:
                known = False
        util = min(1.0, total / a.gpus) if known and a.gpus > 0 else None
        mem_total, mem_card = _memory(a, memory, a.job_id in unknown_memory)
        figures.append(JobFigure(a.job_id, a.attempt, a.gpus, util, mem_total, mem_card))
    return figures


def _memory(a: Attempt, memory: Mapping[tuple[int, int], int],
            unknown: bool) -> tuple[int | None, int | None]:
    """(total, fullest card) bytes of the attempt: NVML's, else the ledger's when NVML
    could not tell for some process, else None."""
    mine = [v for (j, _), v in memory.items() if j == a.job_id]
    if not unknown:
        return sum(mine), max(mine, default=0)
    if a.ledger is not None:
        return sum(a.ledger), max(a.ledger, default=0)
    return None, None


class IdleWindow:
    """Since when each attempt's utilisation has stayed below ``IDLE_BELOW``, and whether
    that has lasted ``idle_after_s`` (then it is flagged). An unknown utilisation neither
    starts nor ends a low spell."""

    def __init__(self, idle_after_s: float) -> None:
        if not idle_after_s > 0:
            raise ValueError(f"idle_after_s {idle_after_s!r}: use a number of seconds > 0")
        self.idle_after_s = idle_after_s
        self._low_since: dict[tuple[int, int], float] = {}

    def observe(self, key: tuple[int, int], utilization: float | None, now: float) -> None:
        """One sample of attempt ``key`` (job id, attempt) at ``now``."""
        if utilization is None:
            return
        if utilization >= IDLE_BELOW:
            self._low_since.pop(key, None)
        else:
            self._low_since.setdefault(key, now)

    def resume(self, key: tuple[int, int], since: float) -> None:
        """The attempt was known to be low since ``since`` (its record, after a restart)."""
        self._low_since.setdefault(key, since)

    def flagged_since(self, key: tuple[int, int], now: float) -> float | None:
        """When the attempt's low spell began, if it has lasted ``idle_after_s`` by ``now``;
        else None."""
        since = self._low_since.get(key)
        return since if since is not None and now - since >= self.idle_after_s else None

    def keep(self, keys: Iterable[tuple[int, int]]) -> None:
        """Forget every attempt but ``keys`` (the ones still running)."""
        alive = set(keys)
        for key in [k for k in self._low_since if k not in alive]:
            del self._low_since[key]


@dataclass
class Tally:
    """What was measured of one attempt so far (its usage record's measured columns):
    used GPU-seconds, seconds measured, peak utilisation, peak memory on one card (MiB)."""

    used_gpu_s: float = 0.0
    measured_s: float = 0.0
    util_peak: float | None = None
    memory_peak_mib: int | None = None
    last_at: float | None = None
    """When the attempt was last sampled (not stored: a restart begins a new interval)."""

    def add(self, figure: JobFigure, now: float, interval_s: float) -> bool:
        """Count one sample taken at ``now``; True when something changed. The utilisation
        counts for the time since the previous sample (at most ``MAX_GAP_FACTOR`` ×
        ``interval_s``; the first sample only starts the clock)."""
        changed = False
        if figure.utilization is not None:
            if self.last_at is not None and now > self.last_at:
                dt = min(now - self.last_at, MAX_GAP_FACTOR * interval_s)
                self.used_gpu_s += figure.utilization * figure.gpus * dt
                self.measured_s += dt
                changed = True
            if self.util_peak is None or figure.utilization > self.util_peak:
                self.util_peak = figure.utilization
                changed = True
            self.last_at = now
        if figure.card_memory_bytes is not None:
            mib = -(-figure.card_memory_bytes // (1 << 20))
            if self.memory_peak_mib is None or mib > self.memory_peak_mib:
                self.memory_peak_mib = mib
                changed = True
        return changed
