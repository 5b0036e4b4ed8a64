"""What NVML says about this machine's GPUs now: each card's utilisation and memory, and
each process on a card with its memory and its share of the card's SMs.

Only queries: nothing here changes a device setting (no accounting mode, no persistence
mode), so the sampler needs no privilege beyond reading NVML. Per-process utilisation comes
from ``nvmlDeviceGetProcessUtilization`` (the driver's sampling buffer since the last
sample this sampler saw); per-process memory from ``nvmlDeviceGetComputeRunningProcesses``.

Contract of :meth:`NvmlSampler.read`: never raises for a driver problem. A card whose
figures cannot be read is left out; a card whose per-process utilisation is not supported
is listed with ``process_util`` False (its processes' ``sm`` is None), and so is a busy card
that has no per-process sample since the last read; a process whose
memory NVML cannot tell (WDDM, vGPU) has ``memory_bytes`` None. Pids are host pids (NVML
does not see pid namespaces).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gpupool.nvml")


@dataclass(frozen=True)
class CardReading:
    """One card: ``index`` (NVML's), ``utilization`` (0..1, the share of the last sample
    period a kernel ran), memory used and total in bytes, and whether its per-process
    utilisation is known (``process_util``)."""

    index: int
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int
    process_util: bool


@dataclass(frozen=True)
class ProcessReading:
    """One process on one card: its memory there (None: NVML cannot tell) and its share of
    the card's SMs (0..1; None: the card does not report per-process utilisation)."""

    pid: int
    card: int
    memory_bytes: int | None
    sm: float | None


@dataclass(frozen=True)
class NvmlReading:
    """One sample of the machine's cards and their processes."""

    cards: tuple[CardReading, ...]
    processes: tuple[ProcessReading, ...]

    def card(self, index: int) -> CardReading | None:
        return next((c for c in self.cards if c.index == index), None)


class NvmlSampler:
    """Reads NVML through pynvml (``libnvidia-ml.so.1``). NVML is initialised on the first
    read and shut down by :meth:`close`; safe to call from one thread at a time (a lock
    guards it anyway)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._last_seen: dict[int, int] = {}
        """Per card, the newest per-process sample's timestamp (µs) seen so far."""
        self._lock = threading.Lock()
        self.problem = ""
        """Why the last read answered None (empty after a good one)."""

    def read(self) -> NvmlReading | None:
        """The cards and processes now; None when NVML cannot be used (no driver, no
        pynvml), ``problem`` saying why."""
        with self._lock:
            if self._nvml is None and not self._open():
                return None
            nvml = self._nvml
            cards: list[CardReading] = []
            processes: list[ProcessReading] = []
            for index, handle in enumerate(self._handles):
                try:
                    card, procs = self._card(nvml, index, handle)
                except nvml.NVMLError as exc:
                    log.debug("NVML: card %d unreadable: %s", index, exc)
                    continue
                cards.append(card)
                processes.extend(procs)
            self.problem = ""
            return NvmlReading(tuple(cards), tuple(processes))

    def close(self) -> None:
        """Shut NVML down (a later read opens it again)."""
        with self._lock:
            if self._nvml is not None:
                with contextlib.suppress(self._nvml.NVMLError):
                    self._nvml.nvmlShutdown()
            self._nvml, self._handles = None, []

    def _open(self) -> bool:
        try:
            import pynvml
        except ImportError:
            self.problem = "pynvml (nvidia-ml-py) is not installed"
            return False
        try:
            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                             for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:
            self.problem = f"NVML unavailable: {exc}"
            return False
        self._nvml = pynvml
        return True

    def _card(self, nvml: Any, index: int,
              handle: Any) -> tuple[CardReading, list[ProcessReading]]:
        util = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        memory_of: dict[int, int | None] = {}
        try:
            running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLLibraryMismatchError:  # a driver without _v3
            running = _running_v2(nvml, handle)
        except nvml.NVMLError:
            running = []
        for proc in running:
            used = proc.usedGpuMemory
            before = memory_of.get(int(proc.pid))
            memory_of[int(proc.pid)] = (None if used is None
                                        else int(used) + (before or 0))
        sm = self._process_util(nvml, index, handle, int(util.gpu))
        pids = set(memory_of) | set(sm or ())
        procs = [ProcessReading(pid, index, memory_of.get(pid),
                                None if sm is None else sm.get(pid, 0.0))
                 for pid in sorted(pids)]
        card = CardReading(index, min(1.0, int(util.gpu) / 100), int(memory.used),
                           int(memory.total), sm is not None)
        return card, procs

    def _process_util(self, nvml: Any, index: int, handle: Any,
                      card_util: int) -> dict[int, float] | None:
        """Each process's mean SM share since the last sample seen on this card ({}: none
        ran); None when the card does not say. No sample since the last one on a card that
        was busy (the driver samples processes less often than we may ask) is unknown, not
        idle: an idle card with none is idle."""
        since = self._last_seen.get(index, 0)
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, since)
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) == nvml.NVML_ERROR_NOT_FOUND:
                return {} if card_util == 0 else None
            return None
        shares: dict[int, list[float]] = defaultdict(list)
        for sample in samples:
            shares[int(sample.pid)].append(min(100, int(sample.smUtil)) / 100)
            self._last_seen[index] = max(self._last_seen.get(index, 0), int(sample.timeStamp))
        return {pid: sum(values) / len(values) for pid, values in shares.items()}


def _running_v2(nvml: Any, handle: Any) -> list[Any]:
    """The running processes through the older ``_v2`` call (drivers before 510)."""
    try:
        return list(nvml.nvmlDeviceGetComputeRunningProcesses_v2(handle))
    except nvml.NVMLError:
        return []
