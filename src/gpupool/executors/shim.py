"""The per-attempt supervisor: ``python -I shim.py RUN_DIR -- COMMAND...``.

The local executor starts this file in a new session, so the shim is the leader of the
attempt's process group and outlives the server. It runs COMMAND as its child (same group,
same stdout/stderr, which the launcher already pointed at the log) and records in RUN_DIR:

``shim.pid``   the shim's pid, written first (lets a restarted server find an attempt whose
               ``handle.json`` it never got to write);
``child.pid``  the command's pid, once started;
``exit``       JSON ``{"exit_code": int, "ended_at": float}``, written atomically (temp file +
               ``os.replace``) after the command ended and the group was emptied. A negative
               code means "killed by that signal", as :mod:`subprocess` reports it.

Signals: SIGTERM never kills the shim; it is forwarded to the command unless the executor
left a ``stop`` marker in RUN_DIR, which means the executor signalled the whole group and the
command already got its own SIGTERM (so a job is never told twice). A ``stop`` marker present
at start-up means the attempt was stopped before it began: the command is not started.

With ``GPUPOOL_SHIM_PARENT_PID`` set to the pid of the process that started it, the shim
kills the whole group (itself included, nothing recorded) as soon as that process is gone:
a node agent's attempts die with it, as they would with the machine.

When the command ends, whatever it left behind in the group is SIGKILLed, so a finished
attempt holds no GPU. The shim then exits with the command's code (128+N for signal N).

``launch.json`` in RUN_DIR (written by the executor, readable by the server alone) says how
to start the command: ``env`` (its whole environment: the shim's own is not passed on),
``uid``/``gid`` (run as that account: no supplementary groups, hence no capabilities),
``umask``, ``rlimits`` (``{"nofile": N, "nproc": N}``), ``cwd`` (entered as the command's
account; if it cannot be, the attempt ends with code 126 and a line in the log saying why)
and ``sandboxed`` (the command is bwrap: it ignores SIGTERM, which reaches the command in it
directly, and its 128+N for "killed by signal N" is recorded as -N). Without the file the
command runs as the shim, in the shim's environment and directory.

Standard library only and no package imports: it must start fast and must run under ``-I``
(no PYTHONPATH, no working directory on ``sys.path``), whatever the job's environment is.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any

EXIT_FILE = "exit"
STOP_FILE = "stop"
SHIM_PID_FILE = "shim.pid"
CHILD_PID_FILE = "child.pid"
LAUNCH_FILE = "launch.json"
NOT_FOUND = 127
NOT_EXECUTABLE = 126
USAGE = 2
PARENT_PID_ENV = "GPUPOOL_SHIM_PARENT_PID"
PARENT_CHECK_S = 0.5


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file, no file, or all of
    ``data`` — never a part. Raises OSError if the directory is gone or not writable."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, obj: dict[str, Any]) -> None:
    """:func:`write_atomic` of ``obj`` as JSON."""
    write_atomic(path, json.dumps(obj, sort_keys=True).encode())


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object stored at ``path``; None if it is missing, unreadable or not an object."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/PID/stat`` from the state field on (state, ppid, pgrp, session, ...); None if
    the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()


def is_running(pid: int) -> bool:
    """True iff process ``pid`` exists and is not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def group_members(pgid: int) -> list[int]:
    """Pids of the running (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = stat_fields(int(name))
        if fields and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.append(int(name))
    return members


def status_for(code: int) -> int:
    """The shim's own exit status for the command's code: the code, or 128+N for signal N."""
    return code if code >= 0 else 128 - code


class _Shim:
    def __init__(self, run_dir: str, command: list[str]) -> None:
        self.run_dir = run_dir
        self.command = command
        self.child: subprocess.Popen[bytes] | None = None
        self.term_seen = False
        self.sandboxed = False

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.term_seen:
            return  # told once (or this is the shim's own forward to its group)
        self.term_seen = True
        child = self.child
        if child is not None and not os.path.exists(self.path(STOP_FILE)):
            if self.sandboxed:  # bwrap ignores SIGTERM: the command in it must get it
                os.killpg(os.getpgrp(), signal.SIGTERM)
            else:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        write_atomic(self.path(SHIM_PID_FILE), f"{os.getpid()}\n".encode())
        stop = read_json(self.path(STOP_FILE))
        if stop is not None or self.term_seen:
            sig = stop.get("signal") if stop else None
            return self.finish(-(sig if isinstance(sig, int) else signal.SIGTERM))
        launch = read_json(self.path(LAUNCH_FILE)) or {}
        self.sandboxed = bool(launch.get("sandboxed"))
        try:
            child = subprocess.Popen(self.command, **_popen_options(launch))
        except (FileNotFoundError, NotADirectoryError) as exc:
            return self.fail(NOT_FOUND, f"no such program: {exc.strerror}")
        except OSError as exc:
            return self.fail(NOT_EXECUTABLE, f"cannot execute: {exc.strerror}")
        self.child = child
        if self.term_seen:  # arrived while starting: the command may have missed it
            if self.sandboxed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgrp(), signal.SIGTERM)
            else:
                child.send_signal(signal.SIGTERM)
        with contextlib.suppress(OSError):
            write_atomic(self.path(CHILD_PID_FILE), f"{child.pid}\n".encode())
        code = self.wait(child)
        if self.sandboxed and 128 < code < 160:
            code = 128 - code  # bwrap's 128+N: the command was killed by signal N
        self.kill_leftovers()
        return self.finish(code)

    def wait(self, child: subprocess.Popen[bytes]) -> int:
        """The child's exit code; with a parent to watch, the group dies with the parent."""
        parent = os.environ.get(PARENT_PID_ENV, "")
        if not parent.isdigit():
            return child.wait()
        while True:
            try:
                return child.wait(timeout=PARENT_CHECK_S)
            except subprocess.TimeoutExpired:
                if os.getppid() != int(parent):
                    os.killpg(os.getpgrp(), signal.SIGKILL)

    def fail(self, code: int, why: str) -> int:
        sys.stderr.write(f"gpupool: cannot start {self.command[0]!r}: {why} (exit {code})\n")
        sys.stderr.flush()
        return self.finish(code)

    def kill_leftovers(self) -> None:
        """SIGKILL every other process still in the group (a few rounds, for fresh forks)."""
        me = os.getpid()
        for _ in range(10):
            others = [pid for pid in group_members(os.getpgrp()) if pid != me]
            if not others:
                return
            for pid in others:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def finish(self, code: int) -> int:
        try:
            write_json_atomic(self.path(EXIT_FILE), {"exit_code": code, "ended_at": time.time()})
        except OSError as exc:
            sys.stderr.write(f"gpupool: cannot record exit code {code}: {exc}\n")
            sys.stderr.flush()
        return status_for(code)


def _popen_options(launch: dict[str, Any]) -> dict[str, Any]:
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
                os._exit(NOT_EXECUTABLE)
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    options["preexec_fn"] = as_the_command
    return options


def main(argv: list[str] | None = None) -> int:
    """Run the shim on ``RUN_DIR -- COMMAND...``; return the status to exit with."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--" or not args[0]:
        sys.stderr.write("usage: python -I shim.py RUN_DIR -- COMMAND [ARG...]\n")
        return USAGE
    return _Shim(os.path.abspath(args[0]), args[2:]).run()


if __name__ == "__main__":
    sys.exit(main())
