"""Which Python interpreter and PATH a workload gets, on the server's machine and on Ray
nodes alike: the running process's own interpreter (its venv, with gpupool's packages) when
every account can run it, else the system's ``python3``; and the few helpers that lay out
what every workload's account may read (``bin/`` links, published files)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from gpupool.executors import accounts
from gpupool.executors.accounts import Account
from gpupool.executors.job_env import SYSTEM_PATH

log = logging.getLogger("gpupool.executors")

ANYONE = Account("nobody", 65534, 65534, "/")
"""An account with no rights of its own: what every account may do, it may."""
SYSTEM_PYTHON = "/usr/bin/python3"


def job_python() -> str:
    """The interpreter jobs get: this process's (its venv, with gpupool's packages) when every
    account can run it, else the system's python3 (this machine's default interpreter may
    live under /root, mode 0700)."""
    own = sys.executable
    if not accounts.isolating():
        return own
    real = os.path.realpath(own)
    reachable = all(accounts.cannot_enter(os.path.dirname(p), ANYONE) is None
                    for p in (own, real))
    if reachable and os.stat(real).st_mode & 0o001:
        return own
    if os.path.exists(SYSTEM_PYTHON):
        log.info("jobs get %s: %s is not reachable by other accounts", SYSTEM_PYTHON, own)
        return SYSTEM_PYTHON
    return own


def job_path(python: str, extra: Sequence[str] = ()) -> str:
    """Workloads' PATH when they get ``python`` (see :func:`job_python`): this process's bin
    dir first when that is this process's own interpreter (its venv's ``python`` and
    ``gpupool``), then ``extra``, then the system's (a process that is not root adds its own
    PATH: jobs run as that person anyway)."""
    rest = SYSTEM_PATH if accounts.isolating() else os.environ.get("PATH", SYSTEM_PATH)
    first = [os.path.dirname(sys.executable)] if python == sys.executable else []
    return ":".join([*first, *extra, rest])


def make_tree(folders: Sequence[tuple[Path, int]]) -> None:
    """Create each folder (parents first, as listed) and give it its mode, whatever the
    umask; idempotent."""
    for path, mode in folders:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)


def link_python(bin_dir: Path, python: str) -> None:
    """``bin_dir/python`` and ``python3``: links to the interpreter workloads get."""
    for name in ("python", "python3"):
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(python)


def publish(source: Path | str, target: Path, mode: int) -> Path:
    """Copy ``source`` to ``target`` with ``mode`` (atomically: a reader sees the old file
    or the new one) unless it is that very file; return ``target``. Raises OSError."""
    if Path(source).resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    os.chmod(target, mode)
    return target
