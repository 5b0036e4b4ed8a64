"""The sections of the GPU acceptance run, in run order, and the worker that runs one.

Each section is a function ``run(fake_gpus: str) -> dict`` (see bench/gpu_check_common.py)
named by module and function, with its own time limit. A section joins by adding one
:class:`Section` to :data:`SECTIONS`.

The worker runs one section in its own process (bench/gpu_acceptance.py starts it, in a new
session, and kills the whole group when its time is up):

    python bench/gpu_sections.py MODULE FUNCTION FAKE_GPUS RESULT_JSON

and writes RESULT_JSON: ``{"outcome": "ran", "found": {...}}``, ``{"outcome": "skipped",
"reason": ...}`` (the section raised Skip) or ``{"outcome": "error", "reason": ...,
"traceback": ...}``. SIGTERM ends it through SystemExit, so the section's ``finally`` blocks
(servers stopped, jobs killed, files removed) run before the group is killed. Directories in
``GPU_ACCEPTANCE_PATH`` (``os.pathsep``-separated) are searched for MODULE first (tests).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    module: str
    function: str = "run"
    timeout_s: float = 120.0


SECTIONS: tuple[Section, ...] = (
    Section("discovery", "NVML discovery: gpupool nodes vs NVML and nvidia-smi",
            "gpu_check_discovery", timeout_s=60),
    Section("interposer", "Interposer with PyTorch: a 4 GiB share held inside the job",
            "gpu_check_interposer", timeout_s=150),
    Section("overhead", "Overhead: a ResNet-50 training step bare and under the interposer",
            "gpu_check_overhead", timeout_s=240),
    Section("mps", "MPS with the real daemon: two jobs at 0.5", "gpu_check_mps",
            timeout_s=120),
    Section("sharing", "Sharing pays: four small jobs one after another vs together",
            "gpu_check_sharing", timeout_s=240),
    Section("mig", "MIG, only if the card is in MIG mode", "gpu_check_mig", timeout_s=90),
    Section("notebooks", "Notebooks: two at 0.5, the idle one reclaimed", "gpu_check_hooks",
            "notebooks", timeout_s=180),
    Section("services", "Services: two half-GPU replicas vs one whole-GPU replica",
            "gpu_check_hooks", "services", timeout_s=150),
    Section("metrics", "Metrics: a real job's utilisation and memory in /metrics",
            "gpu_check_hooks", "metrics", timeout_s=120),
    Section("images", "Images: a job in a container image on the GPU", "gpu_check_hooks",
            "images", timeout_s=120),
)
PATH_ENV = "GPU_ACCEPTANCE_PATH"


def by_name(names: list[str]) -> list[Section]:
    """The named sections, in run order; ValueError naming any unknown one."""
    known = {s.name for s in SECTIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(s.name for s in SECTIONS)}")
    return [s for s in SECTIONS if s.name in names]


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit("terminated: the section's time is up")


def work(module: str, function: str, fake_gpus: str) -> dict[str, Any]:
    """Run one section here; its outcome record (see the module)."""
    from gpu_check_common import Skip

    try:
        found = getattr(importlib.import_module(module), function)(fake_gpus)
        return {"outcome": "ran", "found": found}
    except Skip as skip:
        return {"outcome": "skipped", "reason": str(skip)}
    except BaseException as exc:  # a section's failure is a finding: record it, go on
        return {"outcome": "error", "reason": f"{type(exc).__name__}: {exc}"[:500],
                "traceback": traceback.format_exc()[-3000:]}


def main(argv: list[str]) -> None:
    module, function, fake_gpus, result = argv
    signal.signal(signal.SIGTERM, _terminate)
    extra = [p for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    sys.path[:0] = extra
    record = work(module, function, fake_gpus)
    tmp = Path(result + ".tmp")
    tmp.write_text(json.dumps(record, default=str) + "\n")
    tmp.replace(result)


if __name__ == "__main__":
    main(sys.argv[1:])
