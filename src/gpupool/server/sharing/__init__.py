"""GPU-share enforcement beyond the interposer: MIG instances, CUDA MPS daemons, and the
choice among mechanisms per node and attempt (docs/design/gpu-sharing.md).

- :mod:`~gpupool.server.sharing.choose`: pure: the MIG match and the mechanism choice;
- :mod:`~gpupool.server.sharing.mps`: the per-card MPS control daemons;
- :mod:`~gpupool.server.sharing.setup`: what the machine offers, found at ``gpupool up``.
"""

from gpupool.server.sharing.choose import (
    MODES,
    Choice,
    Offer,
    Share,
    SharingModeError,
    check_mode,
    choose,
    match_mig,
)
from gpupool.server.sharing.mps import MpsDaemons, MpsError, find_control
from gpupool.server.sharing.setup import Sharing, detect, startup_lines

__all__ = [
    "MODES",
    "Choice",
    "MpsDaemons",
    "MpsError",
    "Offer",
    "Share",
    "Sharing",
    "SharingModeError",
    "check_mode",
    "choose",
    "detect",
    "find_control",
    "match_mig",
    "startup_lines",
]
