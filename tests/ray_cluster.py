"""A real multi-node Ray cluster on loopback, for tests and benchmarks.

The head comes from ``ray start --head``; every further node is a raylet of its own, started
by ``ray_node.py`` in a process whose environment declares that node's fake GPUs, name and
labels (as ``ray start`` would on a real machine). Everything binds to 127.0.0.1: Ray swaps
loopback for the host's routable address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and
its ``ray start`` refuses to join a worker node with that setting, hence ``ray_node.py``
(Ray's own Node API, as its test utilities use it).

``stop()`` kills only this cluster's processes (found by its private temp dir), never other
Ray clusters on the machine.

The nodes' agents keep their files in ``agent_dir`` (``GPUPOOL_AGENT_DIR``), a directory of
its own that every account may pass through (0711): jobs run as their owners' accounts when
the tests run as root, and must reach their job dirs there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent


def job_reachable_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that every account may pass through (0711)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o711)
    return path


def ray_available() -> str | None:
    """None if Ray can run here, else why not (the tests are skipped with that reason)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'gpupool[ray]')"
    if not (BIN / "ray").exists():
        return f"the ray command is missing from {BIN}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_home(root: Path) -> dict[str, str]:
    """A HOME of its own: Ray keeps state there (e.g. ``~/.ray/auth_token``, which switches
    later clusters to token authentication), and tests must neither leave nor find any."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home)}


def loopback_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    for key in ("GPUPOOL_FAKE_GPUS", "GPUPOOL_NODE_NAME", "GPUPOOL_NODE_LABELS"):
        env.pop(key, None)
    env.update(extra or {})
    return env


@dataclass
class RayNode:
    name: str
    node_id: str
    raylet_pid: int


@dataclass
class LoopbackCluster:
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpr", dir="/tmp")))
    port: int = field(default_factory=_free_port)
    agent_dir: Path = field(default_factory=lambda: job_reachable_dir("gpa"))
    nodes: dict[str, RayNode] = field(default_factory=dict)
    _orphans: set[int] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_head(self) -> None:
        """A head node with one CPU and no GPU (it is a gpupool node named ``head``)."""
        subprocess.run(
            [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
             "--port", str(self.port), "--num-cpus", "1", "--num-gpus", "0",
             "--include-dashboard=false", "--disable-usage-stats",
             "--temp-dir", str(self.temp_dir)],
            env=loopback_env({"GPUPOOL_NODE_NAME": "head",
                              "GPUPOOL_AGENT_DIR": str(self.agent_dir),
                              **private_home(self.temp_dir)}), check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
        )

    def add_node(self, name: str, fake_gpus: str, labels: str = "") -> RayNode:
        env = loopback_env({"GPUPOOL_NODE_NAME": name, "GPUPOOL_FAKE_GPUS": fake_gpus,
                            "GPUPOOL_NODE_LABELS": labels,
                            "GPUPOOL_AGENT_DIR": str(self.agent_dir),
                            **private_home(self.temp_dir)})
        out = subprocess.run(
            [sys.executable, str(HERE / "ray_node.py"), self.address, str(self.temp_dir)],
            env=env, check=True, capture_output=True, text=True, timeout=120,
        ).stdout
        info = json.loads(out.strip().splitlines()[-1])
        node = RayNode(name, info["node_id"], int(info["raylet_pid"]))
        self.nodes[name] = node
        return node

    def kill_node(self, name: str) -> float:
        """SIGKILL the node's raylet (as if the machine died); returns when it was sent.
        Its helper processes are left to die on their own, as Ray's design has them do (they
        are remembered so that ``stop`` kills any that linger)."""
        node = self.nodes.pop(name)
        self._orphans |= _descendants({node.raylet_pid}, _parents())
        os.kill(node.raylet_pid, signal.SIGKILL)
        return time.time()

    def stop(self) -> None:
        """Kill every process of this cluster (matched by its temp dir, with all their
        descendants: Ray renames its workers, so not all of them carry it), then remove it."""
        marker = str(self.temp_dir).encode()
        for _ in range(3):
            parents = _parents()
            ours = {pid for pid in parents if _cmdline_has(pid, marker)}
            ours = _descendants(ours, parents) | (self._orphans & set(parents))
            self._orphans = set()
            for pid in ours:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if not ours:
                break
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        shutil.rmtree(self.agent_dir, ignore_errors=True)


def _parents() -> dict[int, int]:
    """pid → parent pid of every process."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def _descendants(roots: set[int], parents: dict[int, int]) -> set[int]:
    found = set(roots)
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def _cmdline_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
