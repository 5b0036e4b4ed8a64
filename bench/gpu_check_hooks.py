"""GPU acceptance: the sections other modules own, adapted to the run's form (``checks``
plus figures, :class:`~gpu_check_common.Skip` when they cannot run here).

- ``notebooks``: bench/gpu_notebooks.py (needs JupyterLab);
- ``services``: bench/gpu_services.py;
- ``metrics``: bench/gpu_metrics.py (issue 19), ``images``: bench/gpu_images.py (issue 20):
  imported only if the module exists; until then the section is skipped, "not written yet".
  A module that joins later needs only ``run_section(fake_gpus: str) -> dict``; its dict's
  ``verdict`` (or ``checks``) becomes the section's checks.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from gpu_check_common import Skip, container_runtime, held

BENCH = Path(__file__).resolve().parent
SERVICE_SECONDS = 10.0


def notebooks(fake_gpus: str) -> dict[str, Any]:
    if importlib.util.find_spec("jupyterlab") is None:
        raise Skip("jupyterlab not importable (the notebook wheels did not travel: "
                   "scripts/gpu_wheels.sh)")
    import gpu_notebooks

    found = gpu_notebooks.run_section(fake_gpus)
    found["checks"] = found["verdict"]
    found["markdown"] = (f"Both ready {found['ready_s']} s after submit; the idle one was "
                         f"suspended {found['reclaimed_after_s']} s after "
                         f"({found['reclaim_note']}).")
    return found


def services(fake_gpus: str) -> dict[str, Any]:
    import gpu_services

    found = gpu_services.run_section(fake_gpus, seconds=SERVICE_SECONDS)
    found["checks"] = services_verdict(found)
    report = gpu_services.report(found).strip().splitlines()
    found["markdown"] = "\n".join(report[2:] if report[0].startswith("#") else report)
    return found


def services_verdict(found: dict[str, Any]) -> dict[str, str]:
    """Per check: "held…", "failed: why" or "skipped: why"."""
    half, whole = found["half"], found["whole"]
    out = {"two half replicas on one card": held(found["half_on_one_card"],
                                                 f"placement {half['placement']}"),
           "every request answered": held(
               all(s["requests"] > 0 and s["not_200"] == 0 for s in (half, whole)),
               f"requests {half['requests']} / {whole['requests']}, not 200: "
               f"{half['not_200']} / {whole['not_200']}")}
    devices = {str(half["device"]), str(whole["device"])}
    if devices == {"cpu"} and found.get("fake_gpus"):
        out["replicas run on the GPU"] = "skipped: fake GPUs: the model ran with numpy on the CPU"
    else:
        out["replicas run on the GPU"] = held(all(d.startswith("cuda") for d in devices),
                                              f"devices {sorted(devices)}")
    rps_half, rps_whole = half["rps"], whole["rps"]
    out["two halves serve at least one whole"] = (
        out["replicas run on the GPU"] if not out["replicas run on the GPU"].startswith("held")
        else held(rps_half >= rps_whole, f"{rps_half:,.0f} vs {rps_whole:,.0f} req/s"))
    return out


def external(module: str, issue: int, fake_gpus: str) -> dict[str, Any]:
    """Run ``bench/<module>.py``'s ``run_section`` if the module exists (see the module)."""
    if not (BENCH / f"{module}.py").is_file():
        raise Skip(f"not written yet: bench/{module}.py (issue {issue})")
    found = dict(importlib.import_module(module).run_section(fake_gpus))
    checks = found.get("verdict", found.get("checks"))
    if not isinstance(checks, dict) or not checks:
        checks = {f"{module} ran": "failed: run_section returned no verdict/checks"}
    found["checks"] = {str(k): str(v) for k, v in checks.items()}
    return found


def metrics(fake_gpus: str) -> dict[str, Any]:
    return external("gpu_metrics", 19, fake_gpus)


def images(fake_gpus: str) -> dict[str, Any]:
    if not (BENCH / "gpu_images.py").is_file():
        raise Skip("not written yet: bench/gpu_images.py (issue 20)")
    if container_runtime() is None:
        raise Skip("no podman or docker on PATH")
    return external("gpu_images", 20, fake_gpus)
