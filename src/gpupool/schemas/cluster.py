"""Nodes, GPUs and queues as the API reports them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GpuShare(BaseModel):
    """One running job's hold on one GPU."""

    job: str = Field(description='The job\'s id, or "(other team)" for a job you may not see.')
    milli: int = Field(description="Its compute share in thousandths of the GPU (1000: all of "
                       "it; 0: a memory-only share).")
    memory_limit_mib: int = Field(description="Its GPU memory limit: the GPU memory it asked "
                                  "for, else its fraction of the card's (0: none known).")


class GpuView(BaseModel):
    index: int
    model: str
    memory_mib: int
    allocated_milli: int
    allocated_memory_mib: int = Field(
        description="GPU memory its jobs asked for explicitly (`gpu_memory`), as the scheduler "
        "counts it: jobs asking for a fraction only add nothing here (see "
        "`reserved_memory_mib`).")
    reserved_memory_mib: int = Field(
        0, description="The sum of its jobs' GPU memory limits (`shares`): may exceed "
        "`memory_mib` when fraction-only and memory-only shares overlap.")
    jobs: list[str] = Field(default_factory=list)
    shares: list[GpuShare] = Field(
        default_factory=list, description="Each job's share, in the order of `jobs`.")


class NodeView(BaseModel):
    name: str
    cpu_milli: int
    memory_mib: int
    cpu_allocated_milli: int
    memory_allocated_mib: int
    gpus: list[GpuView]
    labels: dict[str, str] = Field(default_factory=dict)
    source: str = Field(description="nvml or fake")
    mechanisms: list[str] = Field(
        default_factory=list, description='GPU-share enforcement offered, e.g. ["interposer"].'
    )


class QueueView(BaseModel):
    name: str
    team: str
    quota_gpus: float
    borrow_limit_gpus: float
    used_gpus: float
    borrowed_gpus: float
    pending: int
    running: int
