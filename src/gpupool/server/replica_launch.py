"""How a service's replica is started: gpupool's replica front
(``executors/replica_front.py``) with the service's command as its child.

Contract:

- the command serves HTTP on ``127.0.0.1:$PORT``; with the sandbox on, that port is in the
  replica's own network namespace (``LaunchSpec.private_network``), unreachable from the
  host and from every other workload;
- the front listens on a Unix socket in a directory of the replica's own (0700, owned by
  its account, under a 0711 parent in the system's temporary directory: a socket path must
  be short), bound into the sandbox; the gateway, running as the server, is the only other
  process that can open it. No secret is needed on top: nothing else can connect;
- without a sandbox (``GPUPOOL_SANDBOX=none``, or a server that is not root) the command's
  port is on the host's loopback like any job's: no isolation, as for every workload there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from gpupool.executors.accounts import Account
from gpupool.executors.launch_files import make_passable

FRONT_MODULE = "gpupool.executors.replica_front"
SOCKET_NAME = "front.sock"


def socket_dir(work_dir: Path, job_id: int, attempt: int) -> Path:
    """The directory of one attempt's socket: short, and distinct per server work dir."""
    tag = hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"gpupool-svc-{tag}" / f"{job_id}.{attempt}"


def make_socket_dir(path: Path, account: Account | None) -> str:
    """Create the attempt's socket directory afresh (0700, owned by ``account`` when given)
    and return the socket's path in it."""
    make_passable(str(path.parent))
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
    path.mkdir(mode=0o700)
    if account is not None:
        os.chown(path, account.uid, account.gid)
    return str(path / SOCKET_NAME)


def drop_socket_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def replica_command(python: str, socket: str, port: int, command: list[str]) -> list[str]:
    """The argv that starts the front on ``socket`` in front of ``command`` on ``port``."""
    return [python, "-I", "-m", FRONT_MODULE, "--socket", socket, "--port", str(port), "--",
            *command]
