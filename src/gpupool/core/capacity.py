"""Whether a request could ever be placed in a cluster as it is: judged against each node's
whole capacity (as if the node were empty), not what is free now. A request that fails here
waits forever unless nodes are added, so the server refuses it at submit (or, where the pool
can grow, says so in its pending reason)."""

from __future__ import annotations

import numpy as np

from gpupool.core.cluster import ClusterState
from gpupool.core.reasons import cpu_text, labels_text, memory_text, needs_text, nodes_text
from gpupool.core.request import Request

NEVER_FITS = "can never fit in the pool as it is now"


def holders(state: ClusterState, request: Request) -> int:
    """How many nodes could hold ``request`` if they were empty."""
    fits = (state.cpu_cap >= request.cpu_milli) & (state.mem_cap >= request.memory_mib)
    if request.node_labels:
        fits &= state.label_mask(request.node_labels)
    if request.is_gpu:
        fits &= state.model_mask(request.gpu_models) & (state.gpu_count >= request.num_gpus)
        if request.gpu_memory_mib:
            # Per-GPU memory: the node's smallest real card decides (one model per node).
            real = np.where(state.gpu_left >= 0, state.gpu_mem_cap, np.iinfo(np.int64).max)
            fits &= real.min(axis=1) >= request.gpu_memory_mib
    return int(fits.sum())


def never_fits(state: ClusterState, request: Request, members: int = 1) -> str | None:
    """None when ``members`` distinct nodes could each hold ``request`` on an empty cluster;
    else why not, naming the largest node's capacity, e.g. "can never fit in the pool as it
    is now: needs 9 whole GPUs; the largest node has 4 A100 (80 GiB each), 16 CPU, 64 GiB
    memory"."""
    found = holders(state, request)
    if found >= members:
        return None
    needs = needs_text(request)
    if request.node_labels and not state.label_mask(request.node_labels).any():
        return f"{NEVER_FITS}: {needs}; no node has {labels_text(request.node_labels)}"
    if members > 1:
        return (f"{NEVER_FITS}: {needs} on each of {members} nodes; the pool has "
                f"{nodes_text(state.num_nodes)}, {found} of which could hold one; "
                f"the largest node has {_node_text(state, _largest(state))}")
    return f"{NEVER_FITS}: {needs}; the largest node has {_node_text(state, _largest(state))}"


def _largest(state: ClusterState) -> int:
    """The node with the most GPUs, then memory, then CPU."""
    keys = np.lexsort((state.cpu_cap, state.mem_cap, state.gpu_count))
    return int(keys[-1])


def _node_text(state: ClusterState, node: int) -> str:
    gpus = state.specs[node].gpus
    parts = []
    if gpus:
        mem = min(g.memory_mib for g in gpus)
        each = f" ({memory_text(mem).removesuffix(' memory')} each)" if mem else ""
        parts.append(f"{len(gpus)} {gpus[0].model}{each}")
    else:
        parts.append("no GPU")
    mib = int(state.mem_cap[node])
    memory = memory_text(mib) if mib < 1024 or mib % 1024 == 0 else f"{mib / 1024:.1f} GiB memory"
    parts += [cpu_text(int(state.cpu_cap[node])), memory]
    return ", ".join(parts)
