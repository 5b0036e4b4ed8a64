"""What this machine offers for enforcing GPU shares, found once at ``gpupool up``.

:func:`detect` turns the settings, the inventory and the interposer build result into a
:class:`Sharing` (the pure :class:`Offer` plus the MPS daemons to run); :func:`startup_lines`
is what ``gpupool up`` prints about it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpupool.executors.inventory import LocalInventory, MigInstance, nvml_mig_instances
from gpupool.server.sharing.choose import INTERPOSER, MIG, MPS, Offer, check_mode
from gpupool.server.sharing.mps import MpsDaemons, find_control


@dataclass
class Sharing:
    """The node's offer and, when MPS is offered, its daemons (None otherwise)."""

    offer: Offer = field(default_factory=Offer)
    daemons: MpsDaemons | None = None

    def close(self) -> list[str]:
        """Stop the MPS daemons this server started or adopted; the problems met."""
        return self.daemons.stop_all() if self.daemons is not None else []


def detect(
    mode: str,
    inventory: LocalInventory,
    data_dir: Path,
    interposer: tuple[bool, str],
    mps_control: str = "",
    remote: str = "",
    mig_probe: Callable[[], Mapping[int, tuple[MigInstance, ...]]] = nvml_mig_instances,
) -> Sharing:
    """The offer of this machine's nodes.

    - ``mode``: GPUPOOL_SHARING (auto, mig, mps, interposer, none); raises SharingModeError
      for anything else;
    - MIG: read through NVML (``mig_probe``) when the GPUs are real (inventory source nvml);
    - MPS: offered when ``nvidia-cuda-mps-control`` is found (``mps_control`` or PATH) and the
      GPUs are real; with fake GPUs only on an explicit request, ``mode`` mps or an explicit
      ``mps_control`` path (how the tests drive a stand-in control binary);
    - ``interposer``: ``build.available()``'s answer, ``(True, path)`` or ``(False, why)``;
    - ``remote``: non-empty (e.g. a Ray address) when the nodes are not this machine: then
      nothing is offered yet, for that reason.
    """
    mode = check_mode(mode)
    built, where = interposer
    lib, lib_why = (where, None) if built else (None, " ".join(where.split()) or "not built")
    if remote:
        why = f"not deployed to {remote} nodes yet"
        return Sharing(Offer(mode, {}, why, None, why))
    real = inventory.source == "nvml"
    mig = dict(mig_probe()) if real and mode in ("auto", MIG) else {}
    daemons = None
    mps_why: str | None
    control, missing = find_control(mps_control)
    if mode not in ("auto", MPS):
        mps_why = f"GPUPOOL_SHARING={mode}"
    elif control is None:
        mps_why = missing
    elif not real and mode != MPS and not mps_control:
        mps_why = ("the GPUs are not real (fake GPUs); set GPUPOOL_SHARING=mps or "
                   "GPUPOOL_MPS_CONTROL to use an MPS control binary anyway")
    elif inventory.source == "none":
        mps_why = "no GPU"
    else:
        mps_why = None
        daemons = MpsDaemons(control, data_dir / "mps")
    return Sharing(Offer(mode, mig, mps_why, lib, lib_why), daemons)


def startup_lines(sharing: Sharing) -> list[str]:
    """What ``gpupool up`` says about share enforcement: the mechanisms offered, best first,
    and why each missing one is missing."""
    offer = sharing.offer
    offered = offer.mechanisms()
    lines = [f"GPU sharing ({offer.mode}): "
             + (", ".join(offered) + " offered" if offered else "nothing offered")]
    if MIG in offered:
        for card, instances in sorted(offer.mig.items()):
            names = ", ".join(i.profile for i in instances) or "no instance created"
            lines.append(f"  mig on GPU {card}: {names}")
    if MPS in offered and sharing.daemons is not None:
        lines.append(f"  mps: a control daemon per shared GPU ({sharing.daemons.control}), "
                     f"pipes under {sharing.daemons.base_dir}")
    elif offer.mode in ("auto", MPS):
        lines.append(f"  mps unavailable: {offer.mps_why}")
    if INTERPOSER in offered:
        lines.append(f"GPU shares enforced by the interposer {offer.interposer}")
    elif offered and offer.mode in ("auto", INTERPOSER):
        lines.append(f"  interposer unavailable: {offer.interposer_why}")
    if not offered:
        why = (f"interposer unavailable: {offer.interposer_why}" if offer.mode == "auto"
               else f"GPUPOOL_SHARING={offer.mode}")
        lines.append(f"GPU shares NOT enforced ({why})")
    return lines
