"""The environment a job's process gets for its placement (the same on fake and real GPUs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpupool.core.cluster import GpuSpec


def gpu_memory_limit_mib(gpu_milli: int, gpu_memory_mib: int, card_mib: int) -> int:
    """A job's per-GPU memory limit: the asked GPU memory, else its fraction of the card's
    (0: none known)."""
    return gpu_memory_mib or (int(card_mib * (gpu_milli / 1000)) if card_mib else 0)


def mps_thread_percentage(gpu_milli: int) -> int | None:
    """The MPS active thread percentage of a compute share (1..99), or None for no cap (a
    whole card, or a memory-only share: gpu_milli 0)."""
    if not 0 < gpu_milli < 1000:
        return None
    return max(1, min(99, round(gpu_milli / 10)))


def launch_env(
    job_id: int,
    name: str,
    attempt: int,
    queue: str,
    physical_gpus: Sequence[int],
    gpu_specs: Sequence[GpuSpec],
    gpu_milli: int,
    gpu_memory_mib: int,
    user_env: Mapping[str, str],
) -> dict[str, str]:
    """User variables first, then gpupool's, which win: a job cannot widen its own share.

    Shares export GPUPOOL_GPU_FRACTION, GPUPOOL_GPU_MEMORY_LIMIT_MIB (the asked GPU memory, or
    the fraction of the card's memory), CUDA_MPS_ACTIVE_THREAD_PERCENTAGE and
    CUDA_MPS_PINNED_DEVICE_MEM_LIMIT, as the MPS client limits would be set (no thread
    percentage for a memory-only share, gpu_milli 0: its compute is not capped).
    """
    env = {"PYTHONUNBUFFERED": "1"}  # live logs from Python jobs; the user may override
    env.update(user_env)
    env.update(
        GPUPOOL_JOB_ID=str(job_id),
        GPUPOOL_JOB_NAME=name,
        GPUPOOL_ATTEMPT=str(attempt),
        GPUPOOL_QUEUE=queue,
        CUDA_VISIBLE_DEVICES=",".join(str(g) for g in physical_gpus),
        NVIDIA_VISIBLE_DEVICES=",".join(str(g) for g in physical_gpus) or "none",
    )
    if not physical_gpus:
        return env
    fraction = gpu_milli / 1000
    env["GPUPOOL_GPU_FRACTION"] = f"{fraction:g}"
    card_mib = min((g.memory_mib for g in gpu_specs), default=0)
    limit = gpu_memory_limit_mib(gpu_milli, gpu_memory_mib, card_mib)
    if limit:
        env["GPUPOOL_GPU_MEMORY_LIMIT_MIB"] = str(limit)
    percentage = mps_thread_percentage(gpu_milli)
    if percentage is not None:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(percentage)
    if limit and (gpu_milli < 1000 or gpu_memory_mib):
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = ",".join(
            f"{i}={limit}M" for i in range(len(physical_gpus))
        )
    return env
