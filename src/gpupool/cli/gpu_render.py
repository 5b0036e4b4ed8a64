"""The GPU rows of ``gpupool describe``: what NVML measured of a job's GPUs (mean and peak
utilisation, GPU-hours used of those held, peak memory against the per-GPU limit, the idle
flag). Pure formatting; the schemas are imported for typing only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from gpupool.cli.job_cells import age, mib
from gpupool.cli.jobs_render import local_time, seconds_text

if TYPE_CHECKING:
    from gpupool.schemas.jobs import JobView

NOT_MEASURED = "not measured (no NVML utilisation on this pool, e.g. fake GPUs)"


def describe_rows(view: JobView) -> list[tuple[str | Text, Text]]:
    """``(label, text)`` rows for a job that was placed on GPUs (none for others)."""
    place = view.placement
    usage = view.gpu_usage
    if usage is None:
        if place is None or not place.gpus:
            return []
        return [("GPU use", Text(NOT_MEASURED, style="dim"))]
    mean = "-" if usage.mean_utilization is None else f"{usage.mean_utilization:.0%}"
    peak = "-" if usage.peak_utilization is None else f"{usage.peak_utilization:.0%}"
    rows: list[tuple[str | Text, Text]] = [
        ("GPU use", Text(f"mean {mean}, peak {peak} of its GPUs; "
                         f"{usage.gpu_seconds_used / 3600:.2f} GPU-hours used of "
                         f"{usage.gpu_seconds / 3600:.2f} held "
                         f"(measured {seconds_text(usage.measured_s)})"))]
    if usage.peak_memory_mib is not None:
        limit = view.gpu_memory_limit_mib
        against = f" of its {mib(limit)} limit per GPU" if limit else " (no limit per GPU)"
        rows.append(("GPU memory", Text(f"peak {mib(usage.peak_memory_mib)} on one GPU"
                                        f"{against}")))
    if usage.idle_since is not None:
        rows.append((Text("GPU idle", style="bold yellow"),
                     Text(f"under 5 % utilisation since {local_time(usage.idle_since)} "
                          f"({age(usage.idle_since)}): it holds GPUs it does not use",
                          style="bold yellow")))
    return rows
