"""Start one Ray worker node (a raylet) bound to 127.0.0.1 and exit, leaving it running.

Usage: python ray_node.py HEAD_ADDRESS TEMP_DIR — prints {"node_id", "raylet_pid"} as JSON.
The raylet inherits this process's environment (GPUPOOL_FAKE_GPUS, GPUPOOL_NODE_NAME,
GPUPOOL_NODE_LABELS), and so do the workers it starts, the gpupool agent among them.
"""

from __future__ import annotations

import json
import sys

from ray._private.node import Node
from ray._private.parameter import RayParams


def main() -> None:
    address, temp_dir = sys.argv[1], sys.argv[2]
    params = RayParams(
        node_ip_address="127.0.0.1", gcs_address=address, num_cpus=1, num_gpus=0,
        object_store_memory=80 * 1024 * 1024, include_log_monitor=False,
        node_manager_port=0, min_worker_port=0, max_worker_port=0, temp_dir=temp_dir,
    )
    node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
    raylet = node.all_processes["raylet"][0].process.pid
    print(json.dumps({"node_id": node.node_id, "raylet_pid": raylet}), flush=True)


if __name__ == "__main__":
    main()
