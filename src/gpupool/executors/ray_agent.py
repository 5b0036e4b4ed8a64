"""The per-node agent of a Ray cluster: a Ray actor pinned to one node, which reports that
node's inventory and runs, watches and stops processes there for the server.

It is a thin layer over :class:`~gpupool.executors.local.LocalExecutor` (same supervisor,
same run-directory files, same signals), started with ``die_with_parent`` so that a job's
processes die with the agent: when the node leaves the cluster, nothing it ran lives on.

Where things live on the node: ``$GPUPOOL_AGENT_DIR`` (default ``<tmp>/gpupool-agent``),
then ``<pool id>/<node id prefix>/<path of the run dir under the server's runs dir>``; each process
logs to ``output.log`` in its run dir, which the server pulls (see ``ray_executor``).

What the node declares, in the environment of its ``ray start``:
``GPUPOOL_FAKE_GPUS`` (as for ``gpupool up``; NVML otherwise), ``GPUPOOL_NODE_NAME``
(default: the host name) and ``GPUPOOL_NODE_LABELS`` (``rack=r1,tor=t3``).

Everything crosses the actor boundary as plain data (dicts, lists, str, bytes).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from gpupool.executors.base import Handle, LaunchError, LaunchSpec, Outcome
from gpupool.executors.inventory import local_inventory, parse_labels
from gpupool.executors.local import DEFAULT_LOG, LocalExecutor
from gpupool.interposer import job_env, sharefile
from gpupool.interposer.build import available

AGENT_DIR_ENV = "GPUPOOL_AGENT_DIR"
NAME_ENV = "GPUPOOL_NODE_NAME"
FAKE_GPUS_ENV = "GPUPOOL_FAKE_GPUS"
LABELS_ENV = "GPUPOOL_NODE_LABELS"
SHARE_FILE = "gpushare"


class NodeAgent:
    """One per Ray node. ``node_id`` is the Ray node it runs on; ``address`` the IP other
    nodes reach it at."""

    def __init__(self, node_id: str, address: str, pool_id: str = "pool") -> None:
        self.node_id = node_id
        self.address = address
        base = os.environ.get(AGENT_DIR_ENV) or os.path.join(tempfile.gettempdir(),
                                                             "gpupool-agent")
        self.root = Path(base) / pool_id / node_id[:16]
        self.executor = LocalExecutor(die_with_parent=True)
        self.interposer: str | None = None
        self.interposer_missing = "not built yet"

    def ping(self) -> str:
        return self.node_id

    def inventory(self) -> dict[str, Any]:
        """The node as scheduler nodes (several when it mixes GPU models), its address and
        the pid of the agent. Raises InventoryError for a bad declaration."""
        ready, where = available(self.root / "lib")  # built once per node and source
        self.interposer, self.interposer_missing = (where, "") if ready else (None, where)
        inv = local_inventory(
            os.environ.get(FAKE_GPUS_ENV, ""),
            os.environ.get(NAME_ENV, "") or socket.gethostname() or self.node_id[:12],
            parse_labels(os.environ.get(LABELS_ENV, "")),
        )
        return {
            "source": inv.source,
            "address": self.address,
            "pid": os.getpid(),
            "interposer_missing": None if self.interposer else self.interposer_missing,
            "nodes": [
                {
                    "name": n.name,
                    "cpu_milli": n.cpu_milli,
                    "memory_mib": n.memory_mib,
                    "gpus": [[g.model, g.memory_mib] for g in n.gpus],
                    "labels": dict(n.labels),
                    "physical": list(inv.physical_gpus.get(n.name, ())),
                }
                for n in inv.nodes
            ],
        }

    # -- processes (``where`` is the run dir's path relative to the server's runs dir) ----

    def _run_dir(self, where: str) -> str:
        path = (self.root / where).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"run dir {where!r} escapes the agent's directory")
        return str(path)

    def _handle(self, where: str, job_id: str, attempt: int, pid: int, started: float) -> Handle:
        run_dir = self._run_dir(where)
        return Handle(job_id, attempt, pid, run_dir, os.path.join(run_dir, DEFAULT_LOG), started)

    def launch(self, where: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Start a process; returns {"pid", "started_at"}. Raises LaunchError. With
        ``share_limit_mib`` set, the process is held to its GPU share by this node's
        interposer (a share file in its run dir, removed when it ends)."""
        run_dir = self._run_dir(where)
        env = dict(spec["env"])
        limit = spec.get("share_limit_mib")
        if limit is not None:
            if self.interposer is None:
                raise LaunchError(f"GPU share not enforceable on this node: "
                                  f"{self.interposer_missing}")
            os.makedirs(run_dir, exist_ok=True)
            path = sharefile.create(os.path.join(run_dir, SHARE_FILE), limit_mib=int(limit))
            env.update(job_env(self.interposer, path, env.get("LD_PRELOAD")))
        try:
            handle = self.executor.launch(LaunchSpec(
                job_id=spec["job_id"], attempt=spec["attempt"], command=spec["command"],
                env=env, workdir=spec["workdir"],
                log_path=os.path.join(run_dir, DEFAULT_LOG), run_dir=run_dir))
        except BaseException:
            self._drop_share(run_dir)
            raise
        return {"pid": handle.pid, "started_at": handle.started_at}

    def _drop_share(self, run_dir: str) -> None:
        with contextlib.suppress(OSError):
            sharefile.remove(os.path.join(run_dir, SHARE_FILE))

    def poll(self, where: str, job_id: str, attempt: int, pid: int, started: float,
             log_offset: int, log_limit: int) -> dict[str, Any]:
        """{"outcome": None while running, else the Outcome as a dict; "log": the log's bytes
        from ``log_offset`` (read after the outcome, so a final poll sees the whole log)}."""
        outcome = self.executor.poll(self._handle(where, job_id, attempt, pid, started))
        if outcome is not None:
            self._drop_share(self._run_dir(where))  # its accounting goes with the process
        data = self.read_log(where, log_offset, log_limit)
        return {"outcome": None if outcome is None else _outcome_json(outcome), "log": data}

    def signal(self, where: str, job_id: str, attempt: int, pid: int, started: float,
               force: bool) -> None:
        handle = self._handle(where, job_id, attempt, pid, started)
        if force:
            self.executor.kill(handle)
        else:
            self.executor.terminate(handle)

    def adopt(self, where: str, job_id: str, attempt: int, pid: int, started: float) -> bool:
        return self.executor.adopt(self._handle(where, job_id, attempt, pid, started))

    def find(self, where: str, job_id: str, attempt: int) -> dict[str, Any] | None:
        run_dir = self._run_dir(where)
        handle = self.executor.find_handle(LaunchSpec(
            job_id=job_id, attempt=attempt, command=["-"],
            log_path=os.path.join(run_dir, DEFAULT_LOG), run_dir=run_dir))
        return None if handle is None else {"pid": handle.pid, "started_at": handle.started_at}

    def abandon(self, where: str, job_id: str, attempt: int) -> None:
        run_dir = self._run_dir(where)
        self.executor.abandon(LaunchSpec(job_id=job_id, attempt=attempt, command=["-"],
                                         run_dir=run_dir))

    def read_log(self, where: str, offset: int, limit: int) -> bytes:
        return self.executor.read_log(os.path.join(self._run_dir(where), DEFAULT_LOG),
                                      offset, limit)

    def free_port(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((self.address, 0))
            return int(sock.getsockname()[1])


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {"exit_code": outcome.exit_code, "ended_at": outcome.ended_at, "lost": outcome.lost,
            "reason": outcome.reason}
