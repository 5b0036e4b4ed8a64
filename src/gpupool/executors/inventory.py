"""What the local machine offers: CPU, memory, and GPUs (NVML, or declared fake GPUs)."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from gpupool.core.cluster import GpuSpec, NodeSpec

_GROUP = re.compile(
    r"^(\d+)\s*[xX]\s*([A-Za-z0-9_.]+?)(?:-(\d+(?:\.\d+)?)\s*(GB|GiB|G|MB|MiB|M))?$"
)


class InventoryError(ValueError):
    """A fake-GPU declaration that cannot be parsed."""


@dataclass(frozen=True)
class LocalInventory:
    """The machine as scheduler nodes. The core keeps one GPU model per node, so a machine
    with several models becomes one node per model (``host/MODEL``), CPU and memory split in
    proportion to GPUs; ``physical_gpus[node]`` maps a node's GPU index to the card's index."""

    nodes: tuple[NodeSpec, ...]
    physical_gpus: dict[str, tuple[int, ...]]
    source: str  # "nvml", "fake" or "none"


def parse_fake_gpus(text: str) -> tuple[GpuSpec, ...]:
    """``4xA100-80GB,2xT4-16GB`` → 4 A100 (81,920 MiB) and 2 T4 (16,384 MiB).

    The model is the part before the size (``A100``); the size is optional (0 = unknown).
    Raises InventoryError naming the bad group.
    """
    gpus: list[GpuSpec] = []
    for raw in text.split(","):
        group = raw.strip()
        if not group:
            continue
        match = _GROUP.match(group)
        if not match:
            raise InventoryError(
                f"fake GPUs: cannot read {group!r}; write COUNTxMODEL[-SIZE], e.g. 4xA100-80GB"
            )
        count, model, size, unit = match.groups()
        if int(count) < 1 or int(count) > 64:
            raise InventoryError(f"fake GPUs: {group!r} must declare 1 to 64 GPUs")
        mib = 0
        if size:
            factor = 1 if unit.upper().startswith("M") else 1024
            mib = round(float(size) * factor)
        gpus.extend(GpuSpec(model, mib) for _ in range(int(count)))
    if not gpus:
        raise InventoryError("fake GPUs: nothing declared; e.g. 4xA100-80GB")
    return tuple(gpus)


def nvml_gpus() -> tuple[GpuSpec, ...]:
    """The GPUs NVML reports, or () when there is no driver or no GPU."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return ()
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode()
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
            gpus.append(GpuSpec(str(name).replace("NVIDIA ", "").replace(" ", "-"), int(memory)))
        return tuple(gpus)
    finally:
        pynvml.nvmlShutdown()


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")


def parse_labels(text: str) -> dict[str, str]:
    """``rack=r1,tor=t3`` → {"rack": "r1", "tor": "t3"} (topology labels of a node).
    Raises InventoryError naming the bad pair."""
    labels: dict[str, str] = {}
    for raw in text.split(","):
        pair = raw.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _LABEL.match(key) or not _LABEL.match(value):
            raise InventoryError(
                f"node labels: cannot read {pair!r}; write KEY=VALUE pairs, e.g. rack=r1,tor=t3"
            )
        labels[key] = value
    return labels


def local_inventory(
    fake_gpus: str = "", node_name: str = "", labels: dict[str, str] | None = None
) -> LocalInventory:
    """This machine as a node. Declared fake GPUs win over NVML; ``labels`` (topology, e.g.
    rack) go on every node of the machine."""
    labels = labels or {}
    cpu = (os.cpu_count() or 1) * 1000
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    name = node_name or socket.gethostname() or "local"
    if fake_gpus:
        gpus, source = parse_fake_gpus(fake_gpus), "fake"
    else:
        gpus = nvml_gpus()
        source = "nvml" if gpus else "none"
    models = sorted({g.model for g in gpus})
    if len(models) <= 1:
        node = NodeSpec(name, cpu, int(memory), gpus, labels=labels)
        return LocalInventory((node,), {name: tuple(range(len(gpus)))}, source)
    nodes = []
    physical: dict[str, tuple[int, ...]] = {}
    for model in models:
        indices = tuple(i for i, g in enumerate(gpus) if g.model == model)
        share = len(indices) / len(gpus)
        node_name = f"{name}/{model}"
        nodes.append(
            NodeSpec(
                node_name,
                int(cpu * share),
                int(memory * share),
                tuple(gpus[i] for i in indices),
                labels=labels,
            )
        )
        physical[node_name] = indices
    return LocalInventory(tuple(nodes), physical, source)
