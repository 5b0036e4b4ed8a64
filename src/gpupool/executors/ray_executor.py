"""A pool spanning the nodes of a Ray cluster: membership from Ray, processes through one
:class:`~gpupool.executors.ray_agent.NodeAgent` actor pinned to each node.

Ray provides membership, health, process placement (node affinity) and transport; which
node and GPUs a job gets is decided by gpupool's own scheduler, never by Ray's resource
accounting (agents ask Ray for no CPU and no GPU).

Contracts:

- :meth:`RayPool.refresh` (at most every ``refresh_s``) returns the pool's inventory when
  membership changed, else None. A node whose raylet is gone, or whose agent died, is *lost*:
  it leaves the inventory, and every process that ran there polls as ended with
  ``lost=True`` and reason ``node NAME lost``.
- Agents are detached named actors (``gpupool-agent-<pool id>-<node id>`` in namespace
  ``gpupool``), so they and the processes they started outlive a restart of the server, which
  re-adopts them. The pool id comes from the server's host and runs directory: a restarted
  server finds its agents again, and two servers on one Ray cluster never share one.
- Isolation is each node's: its agent runs a process as the account ``LaunchSpec.run_as``
  names (creating it there when gpupool created it), sandboxed, in a job dir of its own on
  the node (``LaunchSpec.job_dir`` only says whether to give it one), and reports how in
  ``Handle.isolation`` (see ``ray_agent``). A launch asking for a private network
  (``LaunchSpec.private_network``) is refused: services' replicas run on the server's node.
- Logs: each process logs on its node; every poll appends the new *complete lines* to the
  server-side log file given at launch (the rest once the process ended), and records how
  far it got in ``<server run dir>/log.synced``, so a restarted server neither repeats nor
  skips output.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpupool.core.cluster import GpuSpec, NodeSpec
from gpupool.executors.base import Handle, LaunchError, LaunchSpec, NodeLostError, Outcome
from gpupool.executors.inventory import LocalInventory
from gpupool.executors.local import read_range
from gpupool.executors.ray_agent import NodeAgent

log = logging.getLogger("gpupool.ray")

NAMESPACE = "gpupool"
AGENT_PREFIX = "gpupool-agent-"
SYNCED_FILE = "log.synced"
LOG_CHUNK = 1 << 20
LOOPBACK = ("127.0.0.1", "localhost")


class RayUnavailableError(RuntimeError):
    """Ray is not installed or the cluster cannot be reached."""


@dataclass
class _Member:
    node_id: str
    address: str
    agent: Any
    names: tuple[str, ...]
    info: dict[str, Any]


def connect(address: str) -> None:
    """Join the Ray cluster at ``address`` (``host:port``), or start a local single-node head
    bound to 127.0.0.1 when ``address`` is ``local``. Raises RayUnavailableError."""
    host = address.rsplit(":", 1)[0]
    if address == "local" or host in LOOPBACK:
        # Ray swaps loopback for the host's routable address unless told this is a
        # single-machine setup; tests and `--ray local` must stay on 127.0.0.1.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "Ray is not installed: pip install 'gpupool[ray]'") from None
    try:
        if address == "local":
            ray.init(namespace=NAMESPACE, include_dashboard=False, num_gpus=0,
                     _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
                     log_to_driver=False)
        else:
            ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING,
                     log_to_driver=False)
    except Exception as exc:  # ConnectionError and Ray's own errors
        raise RayUnavailableError(f"cannot reach the Ray cluster at {address}: {exc}") from None


class RayPool:
    """Membership of the Ray cluster as scheduler nodes, and the Executor that runs
    processes on them. Call :func:`connect` first."""

    def __init__(self, runs_dir: Path, refresh_s: float = 1.0, call_timeout_s: float = 30.0
                 ) -> None:
        import ray

        self._ray = ray
        self.runs_dir = runs_dir.resolve()
        self.pool_id = hashlib.sha1(
            f"{socket.gethostname()}:{self.runs_dir}".encode()).hexdigest()[:10]
        self.refresh_s = refresh_s
        self.call_timeout_s = call_timeout_s
        self._members: dict[str, _Member] = {}  # by Ray node id
        self._by_name: dict[str, _Member] = {}
        self._lost: set[str] = set()  # scheduler node names
        self._dead: set[str] = set()  # Ray node ids never taken back (a raylet that comes
        # back registers under a new id)
        self._changed = False
        self._joining: dict[str, tuple[Any, Any, float]] = {}
        """Agents started but not yet answered: node id → (agent, inventory ref, since)."""
        self._retry_at: dict[str, float] = {}
        self._next_refresh = 0.0
        self._inventory: LocalInventory | None = None
        self._offsets: dict[str, int] = {}
        self.node_lost_at: dict[str, float] = {}
        """When each lost node was noticed (time.time()), for reports."""

    # -- membership ------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> LocalInventory | None:
        """The new inventory if membership changed since the last call, else None. Never
        blocks on a joining node: its agent is started and asked for its inventory, and the
        node joins on a later call once the answer is in. If Ray itself cannot be reached,
        the known nodes are kept (and the failure logged)."""
        now = time.time()
        if not force and now < self._next_refresh and self._inventory is not None:
            return None
        self._next_refresh = now + self.refresh_s
        try:
            nodes: list[dict[str, Any]] = self._ray.nodes()  # type: ignore[no-untyped-call]
        except Exception as exc:  # the GCS is down or unreachable
            log.warning("cannot list the Ray cluster's nodes: %s", exc)
            return None
        alive = {n["NodeID"]: str(n["NodeManagerAddress"]) for n in nodes if n.get("Alive")}
        changed = self._inventory is None or self._changed
        self._changed = False
        for node_id in [i for i in self._members if i not in alive]:
            self._lose(node_id, "its Ray node left the cluster")
            changed = True
        for node_id, address in alive.items():
            if (node_id in self._members or node_id in self._dead or node_id in self._joining
                    or now < self._retry_at.get(node_id, 0.0)):
                continue
            self._start_join(node_id, address)
        if self._finish_joins(now):
            changed = True
        if not changed:
            return None
        self._inventory = self._build()
        return self._inventory

    def inventory(self, wait_s: float = 60.0) -> LocalInventory:
        """The inventory once the nodes alive now have joined (or ``wait_s`` passed)."""
        deadline = time.time() + wait_s
        self.refresh(force=True)
        while self._joining and time.time() < deadline:
            time.sleep(0.2)
            self.refresh(force=True)
        return self._inventory or self._build()

    def _start_join(self, node_id: str, address: str) -> None:
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        try:
            agent = ray.remote(num_cpus=0, max_restarts=0)(NodeAgent).options(
                name=f"{AGENT_PREFIX}{self.pool_id}-{node_id}", namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                # Ray SIGKILLs a dying worker's children, which would orphan the jobs under
                # each supervisor; the supervisors notice the agent's death and take their
                # whole process group down themselves instead.
                runtime_env={"env_vars": {"RAY_kill_child_processes_on_worker_exit": "0"}},
            ).remote(node_id, address, self.pool_id)
            self._joining[node_id] = (agent, agent.inventory.remote(), time.time())
        except Exception as exc:
            log.warning("Ray node %s: cannot start its agent (%s); retrying in 10 s",
                        node_id[:12], exc)
            self._retry_at[node_id] = time.time() + 10

    def _finish_joins(self, now: float) -> bool:
        """Take in the nodes whose agents answered; give up (retry later) on slow ones."""
        if not self._joining:
            return False
        refs = [ref for _, ref, _ in self._joining.values()]
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        joined = False
        for node_id, (agent, ref, started) in list(self._joining.items()):
            if ref not in ready:
                if now - started > self.call_timeout_s:
                    del self._joining[node_id]
                    log.warning("Ray node %s: its agent did not answer in %.0f s; retrying",
                                node_id[:12], self.call_timeout_s)
                    self._retry_at[node_id] = now + 10
                continue
            del self._joining[node_id]
            try:
                info = self._ray.get(ref)
            except Exception as exc:
                log.warning("Ray node %s: no inventory (%s); retrying in 10 s", node_id[:12],
                            exc)
                self._retry_at[node_id] = now + 10
                continue
            self._add_member(node_id, agent, info)
            joined = True
        return joined

    def _add_member(self, node_id: str, agent: Any, info: dict[str, Any]) -> None:
        names = []
        for node in info["nodes"]:
            name = node["name"]
            if name in self._by_name:  # two raylets on one host: keep names unique
                name = f"{name}-{node_id[:6]}"
            node["name"] = name
            names.append(name)
        member = _Member(node_id, info["address"], agent, tuple(names), info)
        self._members[node_id] = member
        for name in names:
            self._by_name[name] = member
            self._lost.discard(name)
        log.info("Ray node %s joined as %s", node_id[:12], ", ".join(names))

    def _lose(self, node_id: str, why: str) -> None:
        member = self._members.pop(node_id, None)
        self._dead.add(node_id)
        if member is None:
            return
        self._changed = True
        for name in member.names:
            self._by_name.pop(name, None)
            self._lost.add(name)
            self.node_lost_at.setdefault(name, time.time())
        self._next_refresh = 0.0
        log.warning("node %s lost: %s", ", ".join(member.names), why)

    def _build(self) -> LocalInventory:
        nodes: list[NodeSpec] = []
        physical: dict[str, tuple[int, ...]] = {}
        for member in self._members.values():
            for node in member.info["nodes"]:
                nodes.append(NodeSpec(
                    node["name"], node["cpu_milli"], node["memory_mib"],
                    tuple(GpuSpec(model, mib) for model, mib in node["gpus"]),
                    labels=node["labels"]))
                physical[node["name"]] = tuple(node["physical"])
        nodes.sort(key=lambda n: n.name)
        interposer = {node["name"]: member.info.get("interposer_missing")
                      for member in self._members.values() for node in member.info["nodes"]}
        return LocalInventory(tuple(nodes), physical, "ray", interposer)

    # -- the Executor protocol -------------------------------------------------------------

    def _where(self, run_dir: str) -> str:
        try:
            return Path(run_dir).resolve().relative_to(self.runs_dir).as_posix()
        except ValueError:
            raise LaunchError(f"run dir {run_dir!r} is not under {self.runs_dir}") from None

    def _member(self, node: str) -> _Member:
        member = self._by_name.get(node)
        if member is None:
            raise NodeLostError(f"node {node} is not in the Ray cluster (lost or unknown)")
        return member

    def _call(self, node: str, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call the node's agent and wait. A dead agent makes the node lost (and raises
        LaunchError); Ray's task errors are re-raised as LaunchError with their message."""
        ray = self._ray
        member = self._member(node)
        try:
            return ray.get(getattr(member.agent, method).remote(*args),
                           timeout=timeout or self.call_timeout_s)
        except ray.exceptions.RayActorError as exc:
            self._lose(member.node_id, f"its agent died ({type(exc).__name__})")
            raise NodeLostError(f"node {node} lost") from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise LaunchError(str(cause).strip().splitlines()[-1]) from None

    def launch(self, spec: LaunchSpec) -> Handle:
        if spec.private_network:  # the agents' payload does not carry it: never run without
            raise LaunchError(
                f"job {spec.job_id} attempt {spec.attempt} asks for a private network, which "
                "Ray nodes do not provide: services' replicas run on the server's own node "
                "for now")
        where = self._where(spec.run_dir)
        payload = {"job_id": spec.job_id, "attempt": spec.attempt,
                   "command": list(spec.command), "env": dict(spec.env),
                   "workdir": spec.workdir, "share_limit_mib": spec.share_limit_mib,
                   "node": spec.node, "run_as": spec.run_as, "owner": spec.owner,
                   # the job dir is a server path: the agent makes its own on the node
                   "job_dir": bool(spec.job_dir), "gpu_devices": list(spec.gpu_devices),
                   "readable": list(spec.readable)}
        if spec.image:
            raise LaunchError(f"job {spec.job_id}: Ray nodes do not run images yet")
        try:
            if spec.code_archive:  # the node has no path of the server's: send the bytes
                with open(spec.code_archive, "rb") as f:
                    payload["code"] = f.read()
            os.makedirs(spec.run_dir, exist_ok=True)
        except OSError as exc:
            raise LaunchError(f"cannot read the code or create {spec.run_dir!r}: {exc}") from exc
        result = self._call(spec.node, "launch", where, payload)
        return Handle(spec.job_id, spec.attempt, int(result["pid"]), spec.run_dir,
                      spec.log_path, float(result["started_at"]), spec.node,
                      str(result.get("isolation") or ""))

    def _args(self, handle: Handle) -> tuple[Any, ...]:
        return (self._where(handle.run_dir), handle.job_id, handle.attempt, handle.pid,
                handle.started_at)

    def poll(self, handle: Handle) -> Outcome | None:
        return self.poll_many([handle])[0]

    def poll_many(self, handles: list[Handle]) -> list[Outcome | None]:
        """Poll every handle with one round of concurrent agent calls (and pull their logs).
        A process on a lost node, or whose agent died, ends as lost; one whose agent does
        not answer within 10 s counts as still running (Ray's health checks decide)."""
        ray = self._ray
        results: list[Outcome | None] = [None] * len(handles)
        calls: dict[int, tuple[Any, int]] = {}
        for i, handle in enumerate(handles):
            member = self._by_name.get(handle.node)
            if handle.node in self._lost or member is None:
                results[i] = self._lost_outcome(handle.node)
                continue
            offset = self._offset(handle)
            ref = member.agent.poll.remote(*self._args(handle), offset, LOG_CHUNK)
            calls[i] = (ref, offset)
        if calls:
            refs = [ref for ref, _ in calls.values()]
            ray.wait(refs, num_returns=len(refs), timeout=10)
        for i, (ref, offset) in calls.items():
            handle = handles[i]
            try:
                result = ray.get(ref, timeout=0)
            except ray.exceptions.GetTimeoutError:
                continue  # a slow node is not a lost one
            except ray.exceptions.RayActorError as exc:
                member = self._by_name.get(handle.node)
                if member is not None:
                    self._lose(member.node_id, f"its agent died ({type(exc).__name__})")
                results[i] = self._lost_outcome(handle.node)
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                results[i] = Outcome(None, time.time(), lost=True,
                                     reason=f"agent on {handle.node} failed: {cause}")
                continue
            outcome = result["outcome"]
            self._append_log(handle, offset, result["log"], final=outcome is not None)
            if outcome is None or len(result["log"]) == LOG_CHUNK:
                continue  # running, or more log to pull before calling it ended
            results[i] = Outcome(outcome["exit_code"], outcome["ended_at"], outcome["lost"],
                                 outcome["reason"])
            self._offsets.pop(handle.run_dir, None)  # ended: the file keeps the offset
        return results

    @staticmethod
    def _lost_outcome(node: str) -> Outcome:
        return Outcome(None, time.time(), lost=True, reason=f"node {node} lost")

    def _signal(self, handle: Handle, force: bool) -> None:
        member = self._by_name.get(handle.node)
        if member is None:
            return
        member.agent.signal.remote(*self._args(handle), force)  # fire and forget

    def terminate(self, handle: Handle) -> None:
        self._signal(handle, force=False)

    def kill(self, handle: Handle) -> None:
        self._signal(handle, force=True)

    def adopt(self, handle: Handle) -> bool:
        try:
            return bool(self._call(handle.node, "adopt", *self._args(handle)))
        except LaunchError:
            return False

    def find_handle(self, spec: LaunchSpec) -> Handle | None:
        try:
            found = self._call(spec.node, "find", self._where(spec.run_dir), spec.job_id,
                               spec.attempt)
        except LaunchError:
            return None
        if found is None:
            return None
        return Handle(spec.job_id, spec.attempt, int(found["pid"]), spec.run_dir,
                      spec.log_path, float(found["started_at"]), spec.node,
                      str(found.get("isolation") or ""))

    def abandon(self, spec: LaunchSpec) -> None:
        with contextlib.suppress(LaunchError):  # a lost node runs nothing
            self._call(spec.node, "abandon", self._where(spec.run_dir), spec.job_id,
                       spec.attempt)

    def node_address(self, node: str) -> str:
        return self._member(node).address

    def free_port(self, node: str) -> int:
        return int(self._call(node, "free_port"))

    def pack_artifacts(self, handle: Handle, base: str, paths: tuple[str, ...], limit: int,
                       run_as: str | None) -> tuple[int, str, bytes]:
        """Have the handle's node pack an ended attempt's artifacts (its agent's
        ``pack_artifacts``); (exit code, last line, archive bytes)."""
        got = self._call(handle.node, "pack_artifacts", self._where(handle.run_dir), base,
                         list(paths), limit, run_as, timeout=3600)
        return int(got["code"]), str(got["line"]), bytes(got["data"])

    def read_log(self, log_path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """The server-side copy of the log (what polls pulled so far)."""
        return read_range(log_path, offset, limit)

    # -- log pulling -----------------------------------------------------------------------

    def _offset(self, handle: Handle) -> int:
        known = self._offsets.get(handle.run_dir)
        if known is not None:
            return known
        try:
            known = int(Path(handle.run_dir, SYNCED_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            known = 0
        self._offsets[handle.run_dir] = known
        return known

    def _append_log(self, handle: Handle, offset: int, data: bytes, final: bool) -> None:
        if not final:
            data = data[: data.rfind(b"\n") + 1]
        if not data:
            return
        with open(handle.log_path, "ab") as f:
            f.write(data)
        new = offset + len(data)
        self._offsets[handle.run_dir] = new
        Path(handle.run_dir, SYNCED_FILE).write_text(f"{new}\n")
