"""The per-node agent of a Ray cluster: a Ray actor pinned to one node, which reports that
node's inventory and runs, watches and stops processes there for the server.

It is a thin layer over :class:`~gpupool.executors.local.LocalExecutor` (same supervisor,
same run-directory files, same signals, same isolation), started with ``die_with_parent`` so
that a job's processes die with the agent: when the node leaves the cluster, nothing it ran
lives on.

Isolation, as on the server's own machine: when the agent is root, each process runs as its
owner's Unix account (created on this node when gpupool created it on the server), with an
allowlisted environment (never the agent's or the server's), ``umask 077``, in the
bubblewrap sandbox this node offers (``GPUPOOL_SANDBOX`` in the environment of its
``ray start``: auto, bwrap or none; ``GPUPOOL_DEV_DIR``: where GPU device nodes are, default
/dev). An agent that is not root runs processes as its own user, and says they are not
isolated.

Where things live on the node: ``$GPUPOOL_AGENT_DIR`` (default ``<tmp>/gpupool-agent``, a
directory every account must be able to pass through), then ``<pool id>/<node id
prefix>/`` (the agent's root, 0711), with WHERE the path of a process's run dir under the
server's runs dir:

``runs/WHERE``    0700, the agent's alone: the run dir (``handle.json``, ``launch.json``,
                  ``exit``, ...) and ``output.log``, which the server pulls (``ray_executor``);
``jobs/WHERE``    0700, owned by the process's account: ``$GPUPOOL_JOB_DIR``;
``shares/WHERE/`` 0755, for a GPU share: ``gpushare`` (the interposer's ledger, owned by the
                  account) and ``limit`` (0644: the job reads it, cannot change it);
``lib/``, ``bin/``  0755: the interposer every account can load, and ``python`` /
                  ``python3`` links to an interpreter every account can run.

The sandbox hides ``/root``, ``/home`` and the whole agent directory (every node's runs,
jobs and shares) and binds back the process's own job dir, share dir, ``lib/`` and ``bin/``.

What the node declares, in the environment of its ``ray start``:
``GPUPOOL_FAKE_GPUS`` (as for ``gpupool up``; NVML otherwise), ``GPUPOOL_NODE_NAME``
(default: the host name) and ``GPUPOOL_NODE_LABELS`` (``rack=r1,tor=t3``). Processes get
``GPUPOOL_NODE_NAME`` set to the gpupool node they were placed on.

Everything crosses the actor boundary as plain data (dicts, lists, str, bytes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpupool.executors import accounts
from gpupool.executors.accounts import Account
from gpupool.executors.artifact_collect import pack_as
from gpupool.executors.base import Handle, LaunchError, LaunchSpec, Outcome
from gpupool.executors.interpreter import (
    job_path,
    job_python,
    link_python,
    make_tree,
    publish,
)
from gpupool.executors.inventory import InventoryError, local_inventory, parse_labels
from gpupool.executors.local import DEFAULT_LOG, LocalExecutor, make_passable
from gpupool.executors.sandbox import Sandbox, SandboxModeError, detect
from gpupool.interposer import job_env, sharefile
from gpupool.interposer.build import LIB_NAME, available

AGENT_DIR_ENV = "GPUPOOL_AGENT_DIR"
NAME_ENV = "GPUPOOL_NODE_NAME"
FAKE_GPUS_ENV = "GPUPOOL_FAKE_GPUS"
LABELS_ENV = "GPUPOOL_NODE_LABELS"
SANDBOX_ENV = "GPUPOOL_SANDBOX"
DEV_DIR_ENV = "GPUPOOL_DEV_DIR"
SHARE_FILE = "gpushare"
LIMIT_FILE = "limit"
UMASK = 0o077


class NodeAgent:
    """One per Ray node. ``node_id`` is the Ray node it runs on; ``address`` the IP other
    nodes reach it at."""

    def __init__(self, node_id: str, address: str, pool_id: str = "pool") -> None:
        os.umask(UMASK)  # what the agent writes is its own unless it says otherwise
        self.node_id = node_id
        self.address = address
        self.base = Path(os.environ.get(AGENT_DIR_ENV) or os.path.join(tempfile.gettempdir(),
                                                                       "gpupool-agent"))
        self.root = self.base / pool_id / node_id[:16]
        self.interposer: str | None = None
        self.interposer_missing = "not built yet"
        self.python = job_python()
        self.unusable = ""
        """Why this node cannot run processes (its directory or sandbox), else empty."""
        try:
            self._prepare()
        except OSError as exc:
            self.unusable = f"cannot prepare the agent's directory {self.root}: {exc}"
        sandbox = Sandbox()
        try:
            sandbox = detect(os.environ.get(SANDBOX_ENV, ""), self._hidden(),
                             os.environ.get(DEV_DIR_ENV) or "/dev")
        except SandboxModeError as exc:
            self.unusable = self.unusable or f"{exc} (in the environment of ray start)"
        self.executor = LocalExecutor(die_with_parent=True, sandbox=sandbox,
                                      job_path=job_path(self.python, [str(self.bin)]))

    # -- the directory tree ----------------------------------------------------------------

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def shares(self) -> Path:
        return self.root / "shares"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def _prepare(self) -> None:
        """Create the agent's tree (idempotent; see the module docstring)."""
        make_passable(str(self.root))
        make_tree(((self.root, 0o711), (self.runs, 0o700), (self.jobs, 0o711),
                   (self.shares, 0o711), (self.lib, 0o755), (self.bin, 0o755)))
        link_python(self.bin, self.python)

    def _hidden(self) -> list[str]:
        """What the sandbox empties (each process gets its own parts bound back)."""
        return ["/root", "/home", str(self.base), str(self.runs), str(self.jobs),
                str(self.shares)]

    def _publish(self, library: str) -> str:
        """The interposer as every account can load it: ``lib/libgpushare.so``, 0755 (a
        copy when the install's own library is used)."""
        os.chmod(self.lib, 0o755)
        return str(publish(library, self.lib / LIB_NAME, 0o755))

    def _under(self, folder: Path, where: str) -> Path:
        """``folder/where``, refused if it is not strictly inside ``folder``."""
        path = (folder / where).resolve()
        if folder.resolve() not in path.parents:
            raise ValueError(f"run dir {where!r} escapes the agent's directory")
        return path

    def _run_dir(self, where: str) -> str:
        return str(self._under(self.runs, where))

    # -- the node --------------------------------------------------------------------------

    def ping(self) -> str:
        return self.node_id

    def inventory(self) -> dict[str, Any]:
        """The node as scheduler nodes (several when it mixes GPU models), its address and
        the pid of the agent. Raises InventoryError for a bad declaration, or when the node
        cannot run processes (its directory or its required sandbox)."""
        if self.unusable:
            raise InventoryError(self.unusable)
        ready, where = available(self.lib)  # built once per node and source
        if ready:
            try:
                where = self._publish(where)
            except OSError as exc:
                ready, where = False, f"cannot publish the interposer in {self.lib}: {exc}"
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

    def _handle(self, where: str, job_id: str, attempt: int, pid: int, started: float) -> Handle:
        run_dir = self._run_dir(where)
        return Handle(job_id, attempt, pid, run_dir, os.path.join(run_dir, DEFAULT_LOG), started)

    def launch(self, where: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Start a process; returns {"pid", "started_at", "isolation"}. Raises LaunchError.

        ``spec``: job_id, attempt, command, env, workdir, and optionally node (the gpupool
        node name, given to the process as GPUPOOL_NODE_NAME), run_as and owner (the account
        and whose it is: see LaunchSpec), job_dir (true: give the process a job dir),
        gpu_devices, readable (paths on this node the sandbox shows; others are ignored), code
        (the bytes of the job's code archive, unpacked into its job dir) and
        share_limit_mib (set: the process is held to its GPU share by this node's
        interposer, through share files removed when it ends)."""
        if self.unusable:
            raise LaunchError(f"node cannot run processes: {self.unusable}")
        run_dir = self._run_dir(where)
        env = dict(spec["env"])
        if spec.get("node"):
            env[NAME_ENV] = str(spec["node"])  # gpupool's variables win over the user's
        readable = [str(p) for p in spec.get("readable") or () if os.path.exists(str(p))]
        launch = LaunchSpec(
            job_id=spec["job_id"], attempt=spec["attempt"], command=spec["command"],
            env=env, workdir=spec["workdir"], log_path=os.path.join(run_dir, DEFAULT_LOG),
            run_dir=run_dir, run_as=spec.get("run_as"), owner=spec.get("owner") or "",
            job_dir=str(self._under(self.jobs, where)) if spec.get("job_dir") else "",
            gpu_devices=tuple(int(g) for g in spec.get("gpu_devices") or ()))
        account = self.executor.account_for(launch)  # created here when it is gpupool's
        limit = spec.get("share_limit_mib")
        if launch.job_dir or limit is not None:
            self._check_reachable(account, launch)
        readable += [str(self.bin), str(self.lib)]
        if spec.get("code"):  # the job's code, sent by the server: kept in the run dir (0600)
            archive = os.path.join(run_dir, "code.tar.gz")
            try:
                os.makedirs(run_dir, exist_ok=True)
                fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(bytes(spec["code"]))
            except OSError as exc:
                raise LaunchError(f"cannot keep the job's code in {run_dir}: {exc}") from exc
            launch = replace(launch, code_archive=archive)
        if limit is not None:
            if self.interposer is None:
                raise LaunchError(f"GPU share not enforceable on this node: "
                                  f"{self.interposer_missing}")
            try:
                folder = self._new_share_dir(where)
                ledger = sharefile.create(folder / SHARE_FILE, limit_mib=int(limit))
                if accounts.isolating():  # the ledger is the job's to write, the limit not
                    os.chown(ledger, account.uid, account.gid)
                limit_file = sharefile.write_limit(folder / LIMIT_FILE, int(limit))
            except OSError as exc:
                self._drop_share(where)
                raise LaunchError(f"cannot create the share files in {self.shares}: "
                                  f"{exc}") from exc
            env.update(job_env(self.interposer, ledger, env.get("LD_PRELOAD"), limit_file))
            readable.append(str(folder))
        try:
            handle = self.executor.launch(replace(launch, env=env, readable=tuple(readable)))
        except BaseException:
            self._drop_share(where)
            raise
        return {"pid": handle.pid, "started_at": handle.started_at,
                "isolation": self._isolation(handle.isolation)}

    def _check_reachable(self, account: Account, spec: LaunchSpec) -> None:
        """LaunchError, saying what to change, if the account cannot pass through the
        directories above its job dir and share files."""
        why = accounts.cannot_enter(str(self.jobs), account)
        if why is not None:
            raise LaunchError(
                f"job {spec.job_id} runs as Unix user {account.name!r}, who cannot reach "
                f"the agent's directory {self.root} on this node: {why}; set "
                f"{AGENT_DIR_ENV} in the environment of ray start to a directory every "
                "account may pass through (e.g. mode 0711)")

    def _isolation(self, text: str) -> str:
        """How the processes are isolated, as recorded on the job."""
        if accounts.isolating():
            return text
        return (f"{self.executor.sandbox.describe()} as {accounts.current().name} (the Ray "
                "agent is not root: not isolated from other jobs)")

    def _new_share_dir(self, where: str) -> Path:
        """``shares/WHERE``, created 0755 (the agent's: its entries are not the job's to
        replace), its parents 0711."""
        path = self._under(self.shares, where)
        make_passable(str(path.parent))
        path.mkdir(exist_ok=True)
        os.chmod(path, 0o755)
        return path

    def _drop_share(self, where: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            shutil.rmtree(self._under(self.shares, where), ignore_errors=True)

    def poll(self, where: str, job_id: str, attempt: int, pid: int, started: float,
             log_offset: int, log_limit: int) -> dict[str, Any]:
        """{"outcome": None while running, else the Outcome as a dict; "log": the log's bytes
        from ``log_offset`` (read after the outcome, so a final poll sees the whole log)}."""
        outcome = self.executor.poll(self._handle(where, job_id, attempt, pid, started))
        if outcome is not None:
            self._drop_share(where)  # its accounting goes with the process
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
        if handle is None:
            return None
        return {"pid": handle.pid, "started_at": handle.started_at,
                "isolation": self._isolation(handle.isolation) if handle.isolation else ""}

    def abandon(self, where: str, job_id: str, attempt: int) -> None:
        run_dir = self._run_dir(where)
        self.executor.abandon(LaunchSpec(job_id=job_id, attempt=attempt, command=["-"],
                                         run_dir=run_dir))

    def pack_artifacts(self, where: str, base: str, paths: list[str], limit: int,
                       run_as: str | None) -> dict[str, Any]:
        """Pack an ended attempt's declared artifacts as its account (``base``: its working
        directory, absolute, or relative to its job dir here); {"code", "line", "data"}
        (see :func:`gpupool.executors.artifact_collect.pack_as`)."""
        job_dir = self._under(self.jobs, where)
        folder = base if os.path.isabs(base) else str(job_dir / base) if base else str(job_dir)
        out = os.path.join(self._run_dir(where), "artifacts.tar.gz")
        try:
            code, line = pack_as(run_as, folder, paths, limit, out)
            with open(out, "rb") as f:
                data = f.read() if code == 0 else b""
        finally:
            with contextlib.suppress(OSError):
                os.unlink(out)
        return {"code": code, "line": line, "data": data}

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
