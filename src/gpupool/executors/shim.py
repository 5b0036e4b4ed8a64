"""The per-attempt supervisor: ``python -I shim.py RUN_DIR -- COMMAND...``.

The local executor starts this file in a new session, so the shim is the leader of the
attempt's process group and outlives the server. The shim forks a *recorder*: a second
process of the same account (root when jobs run as other accounts), in the same group, that
starts COMMAND as its child, copies COMMAND's output (stdout and stderr, one pipe) into the
log the launcher opened as the shim's stdout/stderr, under the per-attempt cap of
:mod:`shim_log`, and records COMMAND's exit code::

    shim (group leader: the handle's pid) -> recorder -> COMMAND (its account; or bwrap)

Two processes, so that killing either one loses neither the command nor its exit code:

* the shim killed (``kill -9``): the recorder goes on copying, and when COMMAND ends it
  writes ``command.exit``; seeing the shim gone, it also does the shim's last duties (kill
  what COMMAND left in the group, finish the log). The executor reads ``command.exit`` when
  no ``exit`` was written. A finished command's code is thus never lost, and never re-run.
* the recorder killed: COMMAND goes on (the shim copies its output from then on), but its
  exit code is nobody's to read (it is no child of the shim): once the group is empty, the
  shim records the outcome as lost, reason "supervisor lost" (truly unknown).
* both killed: the same, recorded by the executor once the group is empty.

The job cannot forge these records: the recorder runs as the shim's account, COMMAND gets
none of its file descriptors, and RUN_DIR is writable by that account alone. A job can only
lie about itself (exit 0 after failing), never write a server file. (bwrap's
``--json-status-fd`` was the other candidate; the recorder covers unsandboxed attempts too.)
The one gap: the shim killed in the instant after the recorder saw it alive and before it
finished the log loses the tail kept past the cap (the exit code is recorded before that).

Files in RUN_DIR:

``shim.pid``      the shim's pid, written first (lets a restarted server find an attempt whose
                  ``handle.json`` it never got to write);
``child.pid``     COMMAND's pid, once started (by the recorder);
``command.exit``  JSON ``{"exit_code": int, "ended_at": float}``: how COMMAND ended, written
                  atomically by the recorder as soon as it did;
``exit``          JSON ``{"exit_code": int, "ended_at": float}``, written atomically (temp file
                  + ``os.replace``) by the shim after COMMAND ended and the group was emptied;
                  ``{"exit_code": null, "lost": true, "reason": "supervisor lost: ..."}`` when
                  the recorder was lost. A negative code means "killed by that signal", as
                  :mod:`subprocess` reports it;
``output.tail``   the ring of output past the cap's head (see :mod:`shim_log`).

Signals: SIGTERM never kills the shim or the recorder. Sent to the shim alone, it is passed
to the group (so COMMAND gets it) unless the executor left a ``stop`` marker in RUN_DIR,
which means the executor signalled the whole group and COMMAND already got its own (so a job
is never told twice). A ``stop`` marker present at start-up means the attempt was stopped
before it began: COMMAND is not started.

With ``GPUPOOL_SHIM_PARENT_PID`` set to the pid of the process that started it, the shim
kills the whole group (itself included, nothing recorded) as soon as that process is gone:
a node agent's attempts die with it, as they would with the machine (a recorder that lost
its shim does the same once that process is gone).

When COMMAND ends, whatever it left behind in the group is SIGKILLed, so a finished attempt
holds no GPU. The shim then exits with COMMAND's code (128+N for signal N).

``launch.json`` in RUN_DIR (written by the executor, readable by the server alone) says how
to start the command: ``env`` (its whole environment: the shim's own is not passed on),
``uid``/``gid`` (run as that account: no supplementary groups, hence no capabilities),
``umask``, ``rlimits`` (``{"nofile": N, "nproc": N}``), ``cwd`` (entered as the command's
account; if it cannot be, the attempt ends with code 126 and a line in the log saying why),
``sandboxed`` (the command is bwrap: it ignores SIGTERM, which reaches the command in it
directly, and its 128+N for "killed by signal N" is recorded as -N), ``container`` (the
command is ``podman run`` of that image: its 128+N is recorded as -N too) and ``log_cap`` (bytes;
0: no cap). Without the file the command runs as the shim, in the shim's environment and
directory, with the default cap.

Standard library only and no package imports (its sibling :mod:`shim_log` is loaded by
path): it must start fast and must run under ``-I`` (no PYTHONPATH, no working directory on
``sys.path``), whatever the job's environment is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any


def _sibling(name: str) -> ModuleType:
    """The module in this file's directory called ``name``, without importing the package
    (the shim runs as a script, under ``-I``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"_gpupool_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING or __package__:
    from gpupool.executors import shim_exec, shim_log
else:  # run as a script
    shim_exec = _sibling("shim_exec")
    shim_log = _sibling("shim_log")

EXIT_FILE = "exit"
COMMAND_EXIT_FILE = "command.exit"
STOP_FILE = "stop"
SHIM_PID_FILE = "shim.pid"
CHILD_PID_FILE = "child.pid"
LAUNCH_FILE = "launch.json"
NOT_FOUND = 127
NOT_EXECUTABLE = 126
USAGE = 2
PARENT_PID_ENV = "GPUPOOL_SHIM_PARENT_PID"
PARENT_CHECK_S = 0.5
DEFAULT_LOG_CAP = 100 << 20
SUPERVISOR_LOST = "supervisor lost"
"""The reason of an outcome lost with its supervisor (same text as the executor protocol's)."""
LOST_STATUS = 70


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


def kill_leftovers() -> None:
    """SIGKILL every other process still in this process's group (a few rounds, for fresh
    forks)."""
    me = os.getpid()
    for _ in range(10):
        others = [pid for pid in group_members(os.getpgrp()) if pid != me]
        if not others:
            return
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _code_in(record: dict[str, Any] | None) -> int | None:
    code = record.get("exit_code") if record else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


class _Shim:
    def __init__(self, run_dir: str, command: list[str]) -> None:
        self.run_dir = run_dir
        self.command = command
        self.recorder = 0
        self.term_seen = False

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.term_seen:
            return  # told once (or this is the group signal the shim sent itself)
        self.term_seen = True
        if self.recorder and not os.path.exists(self.path(STOP_FILE)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgrp(), signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        write_atomic(self.path(SHIM_PID_FILE), f"{os.getpid()}\n".encode())
        stop = read_json(self.path(STOP_FILE))
        if stop is not None or self.term_seen:
            sig = stop.get("signal") if stop else None
            return self.finish(-(sig if isinstance(sig, int) else signal.SIGTERM))
        launch = read_json(self.path(LAUNCH_FILE)) or {}
        cap = launch.get("log_cap")
        cap = cap if isinstance(cap, int) and cap >= 0 else DEFAULT_LOG_CAP
        try:
            start = os.fstat(1).st_size
        except OSError:
            start = 0
        read_fd, write_fd = shim_log.open_pipe()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        pid = os.fork()
        if pid == 0:  # the recorder: never returns
            status = LOST_STATUS
            try:
                status = _Recorder(self, launch, read_fd, write_fd, cap, start).run()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        self.recorder = pid
        os.close(write_fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        if self.term_seen:  # arrived before the recorder existed: it would have missed it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgrp(), signal.SIGTERM)
        self.wait_recorder(pid)
        record = read_json(self.path(COMMAND_EXIT_FILE))
        code = _code_in(record)
        log = shim_log.CappedLog(1, self.run_dir, cap, start)
        if code is None:  # the recorder was lost: COMMAND may still run, its code with it
            me = os.getpid()
            shim_log.pump(read_fd, log,
                          lambda: not [p for p in group_members(os.getpgrp()) if p != me])
        kill_leftovers()
        shim_log.drain(read_fd, log)
        log.finish()
        if code is None:
            return self.finish_lost()
        ended = record.get("ended_at") if record else None
        return self.finish(code, ended if isinstance(ended, (int, float)) else None)

    def wait_recorder(self, pid: int) -> None:
        """Until the recorder ended; with a parent to watch, the group dies with the parent."""
        parent = os.environ.get(PARENT_PID_ENV, "")
        if not parent.isdigit():
            os.waitpid(pid, 0)
            return
        pause = 0.005
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if os.getppid() != int(parent):
                os.killpg(os.getpgrp(), signal.SIGKILL)
            time.sleep(pause)
            pause = min(pause * 2, PARENT_CHECK_S)

    def finish(self, code: int, ended_at: float | None = None) -> int:
        record = {"exit_code": code, "ended_at": ended_at or time.time()}
        try:
            write_json_atomic(self.path(EXIT_FILE), record)
        except OSError as exc:
            sys.stderr.write(f"gpupool: cannot record exit code {code}: {exc}\n")
            sys.stderr.flush()
        return status_for(code)

    def finish_lost(self) -> int:
        record = {"exit_code": None, "ended_at": time.time(), "lost": True,
                  "reason": f"{SUPERVISOR_LOST}: the process that watched the command was "
                            "killed, so how the command ended is unknown"}
        with contextlib.suppress(OSError):
            write_json_atomic(self.path(EXIT_FILE), record)
        return LOST_STATUS


class _Recorder:
    """The shim's fork that runs COMMAND, copies its output and records its end."""

    def __init__(self, shim: _Shim, launch: dict[str, Any], read_fd: int, write_fd: int,
                 cap: int, start: int) -> None:
        self.shim_pid = os.getppid()
        self.run_dir = shim.run_dir
        self.command = shim.command
        self.launch = launch
        self.read_fd, self.write_fd = read_fd, write_fd
        self.log = shim_log.CappedLog(1, shim.run_dir, cap, start)
        self.sandboxed = bool(launch.get("sandboxed"))
        self.signal_codes = self.sandboxed or bool(launch.get("container"))
        """The command reports "killed by signal N" as 128+N (bwrap; podman run)."""
        self.child: subprocess.Popen[bytes] | None = None
        self.term_seen = False

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.child is None:
            self.term_seen = True  # COMMAND may not exist yet: told once it does

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:
            child = subprocess.Popen(self.command, stdout=self.write_fd, stderr=self.write_fd,
                                     **shim_exec.popen_options(self.launch))
        except (FileNotFoundError, NotADirectoryError) as exc:
            return self.fail(NOT_FOUND, f"no such program: {exc.strerror}")
        except OSError as exc:
            return self.fail(NOT_EXECUTABLE, f"cannot execute: {exc.strerror}")
        finally:
            os.close(self.write_fd)
        if self.term_seen:  # arrived while starting: the command may have missed it
            with contextlib.suppress(ProcessLookupError):
                if self.sandboxed:  # bwrap ignores SIGTERM: the command in it must get it
                    os.killpg(os.getpgrp(), signal.SIGTERM)
                else:
                    child.send_signal(signal.SIGTERM)
        self.child = child
        with contextlib.suppress(OSError):
            write_atomic(os.path.join(self.run_dir, CHILD_PID_FILE), f"{child.pid}\n".encode())
        try:
            watch = os.pidfd_open(child.pid)  # readable once COMMAND ended (Linux 5.3+)
        except (OSError, AttributeError):
            watch = -1
        shim_log.pump(self.read_fd, self.log, self.ended, interval=0.25, watch=watch)
        code = child.returncode
        if self.signal_codes and 128 < code < 160:
            code = 128 - code  # bwrap's or podman's 128+N: the command was killed by signal N
        return self.record(code)

    def ended(self) -> bool:
        """COMMAND ended; meanwhile, with the shim gone, the group dies with the parent the
        shim was told to watch."""
        assert self.child is not None
        if self.child.poll() is not None:
            return True
        parent = os.environ.get(PARENT_PID_ENV, "")
        if os.getppid() != self.shim_pid and parent.isdigit() and not is_running(int(parent)):
            os.killpg(os.getpgrp(), signal.SIGKILL)
        return False

    def fail(self, code: int, why: str) -> int:
        sys.stderr.write(f"gpupool: cannot start {self.command[0]!r}: {why} (exit {code})\n")
        sys.stderr.flush()
        return self.record(code)

    def record(self, code: int) -> int:
        """Write ``command.exit``; with the shim gone, do its last duties too."""
        try:
            write_json_atomic(os.path.join(self.run_dir, COMMAND_EXIT_FILE),
                              {"exit_code": code, "ended_at": time.time()})
        except OSError as exc:
            sys.stderr.write(f"gpupool: cannot record exit code {code}: {exc}\n")
            sys.stderr.flush()
        if os.getppid() != self.shim_pid:
            kill_leftovers()
            shim_log.drain(self.read_fd, self.log)
            self.log.finish()
        return 0


def main(argv: list[str] | None = None) -> int:
    """Run the shim on ``RUN_DIR -- COMMAND...``; return the status to exit with."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--" or not args[0]:
        sys.stderr.write("usage: python -I shim.py RUN_DIR -- COMMAND [ARG...]\n")
        return USAGE
    return _Shim(os.path.abspath(args[0]), args[2:]).run()


if __name__ == "__main__":
    sys.exit(main())
