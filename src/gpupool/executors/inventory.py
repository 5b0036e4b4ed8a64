"""What the local machine offers: CPU, memory, and GPUs (NVML, or declared fake GPUs)."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

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
    source: str  # "nvml", "fake", "none" or "ray"
    node_interposer: dict[str, str | None] = field(default_factory=dict)
    """Pools whose nodes enforce GPU shares themselves (Ray): per node, None when its own
    interposer is ready, else why not. Empty: the server's mechanisms serve every node."""


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



@dataclass(frozen=True)
class MigInstance:
    """One MIG device (a GPU instance with a compute instance) of a partitioned card.

    ``slices``: the compute slices it holds, out of ``total_slices`` on its card (7 on A100 /
    H100); ``memory_mib``: its own memory as NVML reports it (a little below the profile's
    nominal size, e.g. 9,728 MiB for 1g.10gb on an 80 GB A100); ``uuid``: what
    ``CUDA_VISIBLE_DEVICES`` takes to select it (``MIG-...``)."""

    card: int
    uuid: str
    profile: str
    memory_mib: int
    slices: int
    total_slices: int


_MIG_PROFILE = re.compile(r"MIG\s+(\S+)\s*$")


def mig_profile_name(device_name: str, slices: int, memory_mib: int) -> str:
    """The profile of a MIG device from its NVML name (``NVIDIA A100-SXM4-80GB MIG 1g.10gb``
    → ``1g.10gb``), else built from its slices and memory (``1g.9gb``)."""
    match = _MIG_PROFILE.search(device_name)
    return match.group(1) if match else f"{slices}g.{memory_mib // 1024}gb"


def nvml_mig_instances() -> dict[int, tuple[MigInstance, ...]]:
    """Per card index in MIG mode, its MIG devices (empty tuple: MIG on, nothing created);
    cards not in MIG mode are absent. {} without NVML. Never raises for a driver problem: a
    card whose MIG state cannot be read is treated as not in MIG mode."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        found: dict[int, tuple[MigInstance, ...]] = {}
        for card in range(pynvml.nvmlDeviceGetCount()):
            try:
                found_card = _card_mig(pynvml, card)
            except pynvml.NVMLError:
                continue
            if found_card is not None:
                found[card] = found_card
        return found
    finally:
        pynvml.nvmlShutdown()


def _card_mig(pynvml: Any, card: int) -> tuple[MigInstance, ...] | None:
    handle = pynvml.nvmlDeviceGetHandleByIndex(card)
    current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return None
    total = 0
    for profile in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile)
        except pynvml.NVMLError:
            continue
        total = max(total, int(info.sliceCount))
    instances = []
    for index in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except pynvml.NVMLError:  # an empty slot
            continue
        uuid = _text(pynvml.nvmlDeviceGetUUID(mig))
        attrs = pynvml.nvmlDeviceGetAttributes(mig)
        memory = int(pynvml.nvmlDeviceGetMemoryInfo(mig).total // (1024 * 1024))
        slices = int(attrs.computeInstanceSliceCount or attrs.gpuInstanceSliceCount)
        name = _text(pynvml.nvmlDeviceGetName(mig))
        instances.append(MigInstance(card, uuid, mig_profile_name(name, slices, memory),
                                     memory, slices, max(total, slices)))
    return tuple(instances)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
