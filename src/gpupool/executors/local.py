"""Run attempts as local processes that survive the server (``kill -9`` included).

Each attempt is a process group led by the shim (:mod:`gpupool.executors.shim`), started in
its own session so the server's death does not reach it. The shim records the command's real
exit code in the attempt's run directory, so a restarted server learns how an attempt ended
even if it ended while no server was running. Files in RUN_DIR:

``handle.json``  the :class:`Handle`, written by :meth:`LocalExecutor.launch`;
``shim.pid`` / ``child.pid`` / ``command.exit`` / ``exit`` / ``output.tail``  written by the
                 shim and its recorder (see the shim's module docstring);
``stop``         ``{"signal": N, "sent_at": t}``, written by ``terminate``/``kill`` just before
                 they signal the group;
``launch.json``  how the shim starts the command (its environment, account, limits, working
                 directory, log cap; see the shim), mode 0600.

Supervisor death: the command's exit code is recorded twice, by the shim (``exit``) and by a
second process that survives it (``command.exit``); :meth:`LocalExecutor.poll` falls back on
the second, so a command that finished after its shim was killed keeps its real code. Only
when both are gone is the outcome unknown: ``lost``, reason "supervisor lost".

Logs: each attempt's output is capped (``log_cap``, GPUPOOL_LOG_CAP_MIB, default 100 MiB):
the log keeps its head and its tail and says what was dropped between them (see
:mod:`gpupool.executors.shim_log`). Reads never end inside a UTF-8 character.

Isolation: the command runs as ``LaunchSpec.run_as`` when this executor is root (else as
itself), with an allowlisted environment (:mod:`gpupool.executors.job_env`), ``umask 077``,
open-file and process limits, in the bubblewrap sandbox when the executor has one
(:mod:`gpupool.executors.sandbox`), with a network of its own when
``LaunchSpec.private_network`` asks for one (without a sandbox that flag has no effect: no
sandbox, no isolation). RUN_DIR must be a directory only the executor's account
can write: the shim, which runs as that account, records the outcome there.

A pid is trusted ("ours") only if that process is running, leads its own group, and its
command line is the shim's with this attempt's run directory, so a recycled pid is never
signalled or mistaken for the attempt. Every process of an attempt carries
``GPUPOOL_RUN_DIR`` in its environment, which identifies what is left of a group whose shim
was killed on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from gpupool.executors import accounts, shim
from gpupool.executors.accounts import Account
from gpupool.executors.base import SUPERVISOR_LOST, Handle, LaunchError, LaunchSpec, Outcome
from gpupool.executors.container_launch import ImagePolicy, image_launch, remove_container
from gpupool.executors.containers import ImageError
from gpupool.executors.job_env import SYSTEM_PATH
from gpupool.executors.launch_files import (
    RUN_DIR_ENV,
    account_for,
    make_job_dir,
    make_passable,
    resolve_relative_env,
    unpack_code,
    write_launch_file,
)
from gpupool.executors.log_files import log_cap_from_env, read_range, read_text
from gpupool.executors.sandbox import Sandbox

HANDLE_FILE = "handle.json"
DEFAULT_LOG = "output.log"
__all__ = ["RUN_DIR_ENV", "LocalExecutor", "log_cap_from_env", "make_passable", "read_range",
           "read_text"]
SHIM_MODULE = "gpupool.executors.shim"
_SHIM_FILE = str(Path(shim.__file__).resolve())


class _ShimProcess(subprocess.Popen[bytes]):
    """A shim outlives whoever started it by design, so dropping its Popen while it runs is
    no resource leak worth a ResourceWarning. It is reaped if it already ended; otherwise it
    stays a zombie once it ends, until this process exits (the executor never drops it)."""

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.poll()


class LocalExecutor:
    """The :class:`~gpupool.executors.base.Executor` for processes on this machine (Linux).

    ``python`` is the interpreter that runs the shim (the command itself runs as given).
    Safe to share between threads. Processes it launched are reaped by ``poll``/``launch``
    while this instance lives; after a restart they belong to init, which reaps them.
    """

    def __init__(
        self,
        python: str = sys.executable,
        die_with_parent: bool = False,
        sandbox: Sandbox | None = None,
        job_path: str | None = None,
        log_cap: int | None = None,
        images: ImagePolicy | None = None,
    ) -> None:
        """``die_with_parent``: attempts are killed when this process dies (a node agent's
        processes must not outlive their node's membership); by default they survive it.
        ``sandbox``: the bubblewrap sandbox to run commands in (None: none). ``job_path``:
        the commands' PATH (default: the system directories). ``log_cap``: the most bytes
        of output an attempt's log keeps (head and tail; 0: no cap); None: from
        GPUPOOL_LOG_CAP_MIB in this process's environment (:func:`log_cap_from_env`).
        ``images``: how attempts with an image run (None: images are refused)."""
        self.python = python
        self.die_with_parent = die_with_parent
        self.sandbox = sandbox or Sandbox()
        self.job_path = job_path or SYSTEM_PATH
        self.log_cap = log_cap_from_env() if log_cap is None else max(0, log_cap)
        self.images = images or ImagePolicy()
        self._procs: dict[str, _ShimProcess] = {}
        self._lock = threading.Lock()

    # -- the protocol ------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Handle:
        """Start the attempt under a shim and return at once; ``handle.json`` is written
        before returning. The log is opened in append mode (attempts may share it); an empty
        ``log_path`` means ``RUN_DIR/output.log``. Raises LaunchError for an empty command,
        a missing run_dir or working directory, a run_dir already used by an attempt, or an
        interpreter that cannot be started. A program that does not exist is *not* a
        LaunchError: the attempt ends with exit code 127 (126: not executable) and a line
        in the log saying why."""
        what = f"job {spec.job_id} attempt {spec.attempt}"
        if not spec.command or not spec.command[0]:
            raise LaunchError(f"{what}: the command is empty; give the program and its args")
        if not spec.run_dir:
            raise LaunchError(f"{what}: no run_dir; the executor needs one directory per attempt")
        if spec.workdir is not None and not os.path.isdir(spec.workdir):
            raise LaunchError(
                f"{what}: working directory {spec.workdir!r} does not exist or is not a "
                "directory; create it or fix the job's workdir"
            )
        account = account_for(spec, what)
        if spec.workdir is not None:
            why = accounts.cannot_enter(spec.workdir, account)
            if why is not None:
                raise LaunchError(
                    f"{what}: the job runs as Unix user {account.name!r}, who cannot enter "
                    f"its working directory {spec.workdir!r}: {why}")
        run_dir = os.path.abspath(spec.run_dir)
        for name in (HANDLE_FILE, shim.SHIM_PID_FILE, shim.EXIT_FILE, shim.COMMAND_EXIT_FILE):
            if os.path.exists(os.path.join(run_dir, name)):
                raise LaunchError(
                    f"{what}: run_dir {run_dir!r} was already used by an attempt ({name} "
                    "exists); give every attempt a fresh run_dir"
                )
        log_path = os.path.abspath(spec.log_path or os.path.join(run_dir, DEFAULT_LOG))
        try:
            os.makedirs(run_dir, exist_ok=True)
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            log = open(log_path, "ab")  # noqa: SIM115 - closed below, after Popen
        except OSError as exc:
            raise LaunchError(f"{what}: cannot prepare {run_dir!r} / {log_path!r}: {exc}") from exc
        try:
            job_dir = make_job_dir(spec, account)
            if spec.code_archive:
                code = unpack_code(spec.code_archive, job_dir, account)
                spec = resolve_relative_env(
                    dataclasses.replace(spec, workdir=spec.workdir or code))
            if spec.image:
                command = image_launch(self.images, spec, account, run_dir, job_dir,
                                       self.job_path, self.sandbox, self.log_cap)
                isolation = f"podman {spec.image} as {account.name}"
            else:
                command = list(spec.command)
                isolation = write_launch_file(spec, account, run_dir, job_dir, self.job_path,
                                              self.sandbox, self.log_cap)
        except ImageError as exc:
            log.close()
            raise LaunchError(f"{what}: {exc}") from None
        except OSError as exc:
            log.close()
            raise LaunchError(f"{what}: cannot prepare the attempt's files: {exc}") from exc
        if self.sandbox.enabled and not spec.image:
            # readable paths are bound read-write: the account's own file modes decide
            # (the share dir: its ledger is the job's to write, the limit file is not)
            rw = [p for p in (job_dir, spec.workdir, *spec.readable) if p]
            command = self.sandbox.wrap(command, account, rw=rw,
                                        gpus=spec.gpu_devices, cwd=spec.workdir or job_dir,
                                        private_network=spec.private_network)
        shim_env = {"PATH": SYSTEM_PATH, RUN_DIR_ENV: run_dir}
        if self.die_with_parent:
            shim_env[shim.PARENT_PID_ENV] = str(os.getpid())
        argv = [self.python, "-I", _SHIM_FILE, run_dir, "--", *command]
        with log, self._lock:
            self._reap_finished()
            try:
                proc = _ShimProcess(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                    env=shim_env, start_new_session=True, close_fds=True,
                )
            except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv/env
                raise LaunchError(
                    f"{what}: cannot start the shim with interpreter {self.python!r}: {exc}"
                ) from exc
            self._procs[run_dir] = proc
        handle = Handle(spec.job_id, spec.attempt, proc.pid, run_dir, log_path, time.time(),
                        spec.node, isolation)
        try:
            shim.write_json_atomic(os.path.join(run_dir, HANDLE_FILE), handle.to_json())
        except OSError as exc:
            os.killpg(proc.pid, signal.SIGKILL)  # untracked attempts must not run on
            raise LaunchError(f"{what}: cannot write {HANDLE_FILE} in {run_dir!r}: {exc}") from exc
        return handle

    def poll(self, handle: Handle) -> Outcome | None:
        """None while any process of the attempt runs; otherwise its Outcome, recorded in
        RUN_DIR/exit so every later call (by any instance) gives the same answer. The exit
        code is the command's own, also when the shim was killed and its recorder recorded
        it (what the command left running is then killed here, as the shim would have); after
        :meth:`kill` without a recorded code it is -9 (ended when the SIGKILL was sent).
        ``lost`` with reason "supervisor lost" when both vanished without recording one."""
        self._reap(handle.run_dir)
        outcome = self._recorded(handle)
        if outcome is not None:
            return outcome
        if self._is_ours(handle):
            return None
        command_ended = self._command_exit(handle)
        if self._orphans(handle):
            if command_ended is not None:  # leftovers of a command whose supervisors died
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(handle.pid, signal.SIGKILL)
            return None
        outcome = self._recorded(handle)  # the shim may have finished since the first look
        if outcome is not None:
            return outcome
        outcome = self._command_exit(handle)
        stop = shim.read_json(os.path.join(handle.run_dir, shim.STOP_FILE)) or {}
        sent_at = stop.get("sent_at")
        if outcome is not None:
            pass
        elif stop.get("signal") == signal.SIGKILL and isinstance(sent_at, (int, float)):
            outcome = Outcome(-signal.SIGKILL, float(sent_at))
        else:
            outcome = Outcome(None, time.time(), lost=True, reason=(
                f"{SUPERVISOR_LOST}: the attempt's shim ended without recording how the "
                "command ended (killed, or the machine restarted); the outcome is unknown"))
        self._record(handle, outcome)
        remove_container(self.images, handle.run_dir)  # its supervisor gone: it must not run on
        return outcome

    def terminate(self, handle: Handle) -> None:
        """SIGTERM to every process of the attempt, once each; no-op if it already ended or
        the pid is not ours. Never blocks."""
        self._signal(handle, signal.SIGTERM)

    def kill(self, handle: Handle) -> None:
        """SIGKILL to every process of the attempt (also to what a killed shim left behind);
        no-op if it already ended or the pid is not ours; an attempt in an image also has its
        container removed. Never blocks."""
        self._signal(handle, signal.SIGKILL)
        remove_container(self.images, handle.run_dir)

    def adopt(self, handle: Handle) -> bool:
        """True iff the attempt has not recorded its end and its shim is still running and
        is the very process that was launched (not a recycled pid), or its command still runs
        after the shim was killed. Equivalent to ``poll(handle) is None``, minus the
        recording of an inferred outcome."""
        self._reap(handle.run_dir)
        if self._recorded(handle) is not None:
            return False
        return self._is_ours(handle) or bool(self._orphans(handle))

    def poll_many(self, handles: list[Handle]) -> list[Outcome | None]:
        return [self.poll(handle) for handle in handles]

    def read_log(self, log_path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """:func:`read_range`: never ends inside a UTF-8 character."""
        return read_range(log_path, offset, limit)

    # -- beyond the protocol -----------------------------------------------------------

    def abandon(self, spec: LaunchSpec) -> None:
        """Make sure an attempt that ``find_handle`` did not find never runs its command,
        even if its shim is still starting: leave a SIGTERM stop marker the shim checks
        before it starts the command."""
        run_dir = os.path.abspath(spec.run_dir)
        os.makedirs(run_dir, exist_ok=True)
        shim.write_json_atomic(
            os.path.join(run_dir, shim.STOP_FILE),
            {"signal": int(signal.SIGTERM), "sent_at": time.time()},
        )

    def find_handle(self, spec: LaunchSpec) -> Handle | None:
        """After a restart, the handle of the attempt launched from ``spec``: from
        ``handle.json``, or rebuilt from the shim's own ``shim.pid`` if the server died
        before writing it. None if no shim of this attempt ever got that far."""
        run_dir = os.path.abspath(spec.run_dir)
        data = shim.read_json(os.path.join(run_dir, HANDLE_FILE))
        if data is not None:
            return Handle.from_json(data)
        pid_file = os.path.join(run_dir, shim.SHIM_PID_FILE)
        try:
            pid = int(Path(pid_file).read_text().strip())
            started_at = os.stat(pid_file).st_mtime
        except (OSError, ValueError):
            return None
        log_path = os.path.abspath(spec.log_path or os.path.join(run_dir, DEFAULT_LOG))
        return Handle(spec.job_id, spec.attempt, pid, run_dir, log_path, started_at, spec.node)

    def node_address(self, node: str) -> str:
        """Every node of this executor is this machine: the loopback address."""
        return "127.0.0.1"

    def free_port(self, node: str) -> int:
        """A TCP port free on 127.0.0.1 now (the kernel's pick; free until someone binds it)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    # -- isolation ---------------------------------------------------------------------

    def account_for(self, spec: LaunchSpec) -> Account:
        """The account ``spec``'s command runs as (see :meth:`launch`); LaunchError if it
        does not exist and cannot be created."""
        return account_for(spec, f"job {spec.job_id} attempt {spec.attempt}")

    # -- helpers -----------------------------------------------------------------------

    def _reap(self, run_dir: str) -> None:
        with self._lock:
            proc = self._procs.get(run_dir)
            if proc is not None and proc.poll() is not None:
                del self._procs[run_dir]

    def _reap_finished(self) -> None:
        for run_dir, proc in list(self._procs.items()):
            if proc.poll() is not None:
                del self._procs[run_dir]

    def _is_ours(self, handle: Handle) -> bool:
        """The handle's pid runs, leads its group, and is the shim of this run_dir."""
        fields = shim.stat_fields(handle.pid)
        if fields is None or fields[0] in (b"Z", b"X") or int(fields[2]) != handle.pid:
            return False
        try:
            with open(f"/proc/{handle.pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            return False
        is_shim = any(a == SHIM_MODULE.encode() or a.endswith(b"/shim.py") for a in args)
        return is_shim and os.fsencode(handle.run_dir) in args

    def _orphans(self, handle: Handle) -> list[int]:
        """Running members of the handle's group (the shim's, dying or gone), if they carry
        this attempt's GPUPOOL_RUN_DIR (a group outlives its leader's pid, so the pid cannot
        have been recycled while any member runs). Not shortcut on the shim's pid running: a
        shim being killed is no longer "ours" (its command line is gone) before it stops
        running."""
        marker = f"{RUN_DIR_ENV}={handle.run_dir}".encode()
        members = shim.group_members(handle.pid)
        for pid in members:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        return members
            except OSError:
                continue
        return []

    def _signal(self, handle: Handle, sig: signal.Signals) -> None:
        if not self._is_ours(handle) and not self._orphans(handle):
            return
        stop = {"signal": int(sig), "sent_at": time.time()}
        # without the marker the shim would forward SIGTERM (the command would get two); with
        # the shim gone, it tells poll that an unrecorded end was this SIGKILL
        with contextlib.suppress(OSError):
            shim.write_json_atomic(os.path.join(handle.run_dir, shim.STOP_FILE), stop)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle.pid, sig)

    def _recorded(self, handle: Handle) -> Outcome | None:
        data = shim.read_json(os.path.join(handle.run_dir, shim.EXIT_FILE))
        if data is None:
            return None
        code, ended_at = data.get("exit_code"), data.get("ended_at")
        if not isinstance(ended_at, (int, float)):
            ended_at = time.time()
        reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
        if isinstance(code, int) and not data.get("lost"):
            return Outcome(code, float(ended_at), reason=str(reason))
        return Outcome(None, float(ended_at), lost=True, reason=str(reason))

    def _command_exit(self, handle: Handle) -> Outcome | None:
        """How the command ended as its recorder saw it (the second record, which survives
        the shim); None if it did not record it."""
        data = shim.read_json(os.path.join(handle.run_dir, shim.COMMAND_EXIT_FILE))
        code = data.get("exit_code") if data else None
        if data is None or not isinstance(code, int) or isinstance(code, bool):
            return None
        ended_at = data.get("ended_at")
        return Outcome(code, float(ended_at) if isinstance(ended_at, (int, float))
                       else time.time())

    def _record(self, handle: Handle, outcome: Outcome) -> None:
        """Persist an outcome the executor inferred, so that poll stays idempotent."""
        data: dict[str, object] = {"exit_code": outcome.exit_code, "ended_at": outcome.ended_at}
        if outcome.lost:
            data["lost"] = True
        if outcome.reason:
            data["reason"] = outcome.reason
        with contextlib.suppress(OSError):  # e.g. the run_dir is gone: nothing to keep stable
            shim.write_json_atomic(os.path.join(handle.run_dir, shim.EXIT_FILE), data)
