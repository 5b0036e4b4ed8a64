"""Which mechanism enforces one attempt's GPU share on a node, and the MIG match: pure
functions of the share and of what the node offers (no NVML, no processes, no files).

Order (docs/design/gpu-sharing.md): MIG where the card is partitioned and a free instance
holds the share; CUDA MPS where a control daemon can run for the card; the interposer; else
none. ``GPUPOOL_SHARING`` (a :data:`MODES` value) may force one mechanism, or none.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from gpupool.executors.inventory import MigInstance
from gpupool.server.launch_env import mps_thread_percentage

MODES = ("auto", "mig", "mps", "interposer", "none")
MIG, MPS, INTERPOSER, NONE = "mig", "mps", "interposer", "none"
WHOLE_GPU = "whole GPU"
TEXT_WIDTH = 200
"""The job's ``enforcement`` column holds at most this many characters."""


class SharingModeError(ValueError):
    """A ``GPUPOOL_SHARING`` value that is not one of :data:`MODES`."""


def check_mode(mode: str) -> str:
    """``mode`` normalised (stripped, lower case); raises SharingModeError saying the choices."""
    value = mode.strip().lower() or "auto"
    if value not in MODES:
        raise SharingModeError(
            f"GPU sharing mode {mode!r} is not one of {', '.join(MODES)} "
            "(set GPUPOOL_SHARING to one of them, or leave it unset for auto)")
    return value


@dataclass(frozen=True)
class Share:
    """One attempt's share on one node: the physical card indices it got, its compute share
    per card in milli-GPUs (0: memory only) and its per-card memory limit in MiB (the asked
    GPU memory, or the fraction of the card's; 0: none known)."""

    cards: tuple[int, ...]
    gpu_milli: int
    memory_mib: int
    asked_memory: bool = False
    """True when the job asked for GPU memory (then a whole card is still limited)."""

    @property
    def whole(self) -> bool:
        return self.gpu_milli >= 1000 and not self.asked_memory

    def describe(self) -> str:
        parts = []
        if 0 < self.gpu_milli < 1000:
            parts.append(f"{self.gpu_milli / 1000:g} of the compute")
        if self.memory_mib:
            parts.append(f"{self.memory_mib} MiB")
        return " and ".join(parts) or "the share"


@dataclass(frozen=True)
class Offer:
    """What a node offers for enforcing shares, and why not where it does not.

    ``mig``: per physical card in MIG mode, its instances (cards not in MIG mode absent);
    ``mps_why``/``interposer_why``: None when offered, else the reason it is not;
    ``interposer``: the library's path when offered."""

    mode: str = "auto"
    mig: Mapping[int, tuple[MigInstance, ...]] = field(default_factory=dict)
    mps_why: str | None = "not configured"
    interposer: str | None = None
    interposer_why: str | None = "not built"

    def mechanisms(self) -> list[str]:
        """The mechanisms the node offers, best first, limited to the forced one if any."""
        offered = []
        if self.mig:
            offered.append(MIG)
        if self.mps_why is None:
            offered.append(MPS)
        if self.interposer and self.interposer_why is None:
            offered.append(INTERPOSER)
        return [m for m in offered if self.mode in ("auto", m)]


@dataclass(frozen=True)
class Choice:
    """The decision for one attempt on one node. ``mechanism``: mig, mps, interposer, none,
    ``whole GPU``, or None (no GPU). ``instance``: the MIG instance to use (mig only).
    ``with_interposer``: under MPS, also load the interposer for a memory limit per job (MPS
    limits each process) with pacing off. ``text``: what the job records, ≤ 200 chars."""

    mechanism: str | None
    text: str | None
    instance: MigInstance | None = None
    with_interposer: bool = False


def mig_holds(instance: MigInstance, gpu_milli: int, memory_mib: int) -> bool:
    """True when the instance gives at least the share's compute and memory."""
    compute_ok = instance.slices * 1000 >= gpu_milli * max(instance.total_slices, 1)
    return compute_ok and instance.memory_mib >= memory_mib


def match_mig(
    gpu_milli: int, memory_mib: int, instances: Iterable[MigInstance], in_use: Collection[str]
) -> MigInstance | None:
    """The smallest free instance (fewest slices, then least memory, then uuid) that holds
    ``gpu_milli`` of the card's compute and ``memory_mib`` MiB; None when none does. A share
    is never squeezed into a smaller instance: the reported instance memory is compared as
    is (1g.10gb reports 9,728 MiB, so a 10,240 MiB request needs the next size)."""
    fitting = [i for i in instances
               if i.uuid not in in_use and mig_holds(i, gpu_milli, memory_mib)]
    return min(fitting, key=lambda i: (i.slices, i.memory_mib, i.uuid), default=None)


def choose(
    share: Share,
    offer: Offer,
    mig_in_use: Collection[str] = (),
    mps_failed: Mapping[int, str] | None = None,
) -> Choice:
    """The mechanism for ``share`` on a node offering ``offer``: the first of MIG, MPS and
    the interposer (only the forced one when ``offer.mode`` is not auto) that can hold it.

    Whenever a mechanism better than the chosen one is offered on the node but cannot take
    this share (no matching free MIG instance, an MPS daemon that failed per ``mps_failed``,
    a share spanning several cards), the text says so after the mechanism; a mechanism that
    is simply not offered is only named when nothing is left ("none (...)")."""
    if not share.cards:
        return Choice(None, None)
    if share.whole:
        return Choice(WHOLE_GPU, WHOLE_GPU)
    failed = mps_failed or {}
    mode = offer.mode
    if mode == NONE:
        return Choice(NONE, "none (sharing disabled: GPUPOOL_SHARING=none)")
    notes: list[str] = []
    single = share.cards[0] if len(share.cards) == 1 else None
    on_mig = [c for c in share.cards if c in offer.mig]

    if mode in ("auto", MIG):
        if single is not None and on_mig:
            found = match_mig(share.gpu_milli, share.memory_mib, offer.mig[single], mig_in_use)
            if found is not None:
                return Choice(MIG, _cap(f"mig {found.profile} ({found.uuid})"), found)
            notes.append(f"mig: no free MIG instance of GPU {single} holds {share.describe()}")
        elif on_mig:
            notes.append(f"mig: the share spans {len(share.cards)} GPUs, a process uses one "
                         "MIG instance")
        elif mode == MIG:
            notes.append(f"mig: GPU {','.join(map(str, share.cards))} is not in MIG mode")

    if mode in ("auto", MPS):
        if on_mig:
            if mode == MPS:
                notes.append("mps: the GPU is in MIG mode")
        elif offer.mps_why is not None:
            if mode == MPS:
                notes.append(f"mps unavailable: {offer.mps_why}")
        elif single is None:
            notes.append(f"mps: one daemon per GPU, the share spans {len(share.cards)} GPUs")
        elif single in failed:
            notes.append(f"mps: {failed[single]}")
        else:
            layered = offer.interposer is not None and offer.interposer_why is None
            return Choice(MPS, _cap(_mps_text(share, layered, notes)), None, layered)

    if mode in ("auto", INTERPOSER):
        if offer.interposer is not None and offer.interposer_why is None:
            return Choice(INTERPOSER, _cap(_with_notes(INTERPOSER, notes)))
        notes.insert(0, f"interposer unavailable: {offer.interposer_why or 'not built'}")
        if mode == "auto" and offer.mps_why is not None and not on_mig:
            notes.append(f"mps unavailable: {offer.mps_why}")
    if mode != "auto":
        notes.append(f"GPUPOOL_SHARING={mode}")
    return Choice(NONE, _cap(_with_notes(NONE, notes)))


def _mps_text(share: Share, layered: bool, notes: list[str]) -> str:
    limits = []
    percentage = mps_thread_percentage(share.gpu_milli)
    if percentage is not None:
        limits.append(f"{percentage}% of SMs")
    if share.memory_mib:
        where = "per process and per job" if layered else "per process"
        limits.append(f"{share.memory_mib} MiB {where}")
    head = "mps + interposer" if layered else MPS
    detail = ([f"per GPU: {', '.join(limits)}"] if limits else []) + notes
    return _with_notes(head, detail)


def _with_notes(head: str, notes: list[str]) -> str:
    return f"{head} ({'; '.join(notes)})" if notes else head


def _cap(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 2] + "…)"
