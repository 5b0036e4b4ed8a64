"""Which Python interpreter and PATH a workload gets, on the server's machine and on Ray
nodes alike: the running process's own interpreter (its venv, with gpupool's packages) when
every account can run it, else the system's ``python3``."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

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
