"""Nodes, GPUs and queues as the API reports them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GpuView(BaseModel):
    index: int
    model: str
    memory_mib: int
    allocated_milli: int
    allocated_memory_mib: int
    jobs: list[str] = Field(default_factory=list)


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
