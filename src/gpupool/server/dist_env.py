"""The environment of a distributed job's processes, following torchrun's conventions.

Every process of a job spanning ``nodes`` nodes with ``procs_per_node`` processes each gets:

- ``MASTER_ADDR`` / ``MASTER_PORT``: where rank 0's node listens (the rendezvous);
- ``WORLD_SIZE`` = nodes × procs_per_node, ``RANK`` = node_rank × procs_per_node +
  local_rank, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` = procs_per_node, ``NODE_RANK`` and
  ``GROUP_RANK`` (torchrun's name for the node rank);
- the ``PET_*`` variables torchrun reads in place of its command-line options
  (``PET_NNODES``, ``PET_NODE_RANK``, ``PET_NPROC_PER_NODE``, ``PET_MASTER_ADDR``,
  ``PET_MASTER_PORT``), so a bare ``torchrun train.py`` launched once per node starts one
  worker per GPU of its node and joins the others (``PET_NPROC_PER_NODE`` is the node's GPU
  count, at least 1).

With one process per node (the launcher form), that process is local rank 0 of its node;
torchrun then overwrites RANK/WORLD_SIZE/LOCAL_* for the workers it starts.
"""

from __future__ import annotations


def distributed_env(
    master_addr: str,
    master_port: int,
    nodes: int,
    node_rank: int,
    procs_per_node: int,
    local_rank: int,
    gpus_per_node: int,
) -> dict[str, str]:
    """The variables of one process; ranks must be within their ranges (ValueError)."""
    if not 0 <= node_rank < nodes or not 0 <= local_rank < procs_per_node:
        raise ValueError(
            f"rank out of range: node {node_rank} of {nodes}, local {local_rank} of "
            f"{procs_per_node}"
        )
    world = nodes * procs_per_node
    return {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(world),
        "RANK": str(node_rank * procs_per_node + local_rank),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(procs_per_node),
        "NODE_RANK": str(node_rank),
        "GROUP_RANK": str(node_rank),
        "PET_NNODES": str(nodes),
        "PET_NODE_RANK": str(node_rank),
        "PET_NPROC_PER_NODE": str(max(1, gpus_per_node)),
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(master_port),
    }
