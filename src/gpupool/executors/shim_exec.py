"""How the shim starts the command, as ``launch.json`` describes it: its environment, its
account (no supplementary groups, hence no capabilities), umask, resource limits and working
directory (entered as the account: exit 126 and a line in the log if it cannot be), and for
a bwrap sandbox SIGTERM ignored by bwrap itself (the command in it gets it directly).

Standard library only: the shim loads this file beside it when run as a script (``-I``).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from typing import Any

CANNOT_ENTER = 126


def popen_options(launch: dict[str, Any]) -> dict[str, Any]:
    """Popen keyword arguments for the command as ``launch.json`` describes it."""
    options: dict[str, Any] = {}
    if isinstance(launch.get("env"), dict):
        options["env"] = {str(k): str(v) for k, v in launch["env"].items()}
    uid, gid = launch.get("uid"), launch.get("gid")
    if isinstance(uid, int) and isinstance(gid, int) and os.geteuid() == 0:
        options.update(user=uid, group=gid, extra_groups=[])
    if isinstance(launch.get("umask"), int):
        options["umask"] = launch["umask"]
    raw_limits = launch.get("rlimits")
    limits: dict[str, Any] = raw_limits if isinstance(raw_limits, dict) else {}
    cwd = launch.get("cwd") if isinstance(launch.get("cwd"), str) else None
    ignore_term = bool(launch.get("sandboxed"))

    def as_the_command() -> None:  # in the child, after the switch to the command's account
        for name, which in (("nofile", resource.RLIMIT_NOFILE),
                            ("nproc", resource.RLIMIT_NPROC)):
            value = limits.get(name)
            if isinstance(value, int) and value > 0:
                _, hard = resource.getrlimit(which)
                capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
                with contextlib.suppress(ValueError, OSError):
                    resource.setrlimit(which, (capped, capped))
        if cwd is not None:
            try:
                os.chdir(cwd)
            except OSError as exc:
                os.write(2, f"gpupool: cannot enter the working directory {cwd!r} as uid "
                            f"{os.getuid()}: {exc.strerror}\n".encode())
                os._exit(CANNOT_ENTER)
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    options["preexec_fn"] = as_the_command
    return options
