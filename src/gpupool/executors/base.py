"""The executor protocol shared by every backend (local processes now, Ray later).

The server decides *what* runs *where*; an executor only starts, watches and stops
processes. Every handle is plain data (``to_json``/``from_json``) so the server can store it
in its database and, after a crash or restart, ``adopt`` the processes it had started.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What to run. ``env`` is added to a small allowlisted base environment (PATH, HOME,
    LANG, ...; never the server's own), and already holds CUDA_VISIBLE_DEVICES and the share
    variables; ``log_path`` receives stdout and stderr
    together; ``run_dir`` is a directory the executor owns for this attempt (pid, exit code);
    ``node`` is the scheduler node it must run on (executors spanning machines use it)."""

    job_id: str
    attempt: int
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    log_path: str = ""
    run_dir: str = ""
    node: str = "local"
    share_limit_mib: int | None = None
    """For executors whose nodes enforce GPU shares themselves (Ray): create the attempt's
    interposer share file on the node with this per-GPU memory limit (0: none) and preload
    the node's interposer. None: nothing to do (no share, or the server enforced it)."""
    run_as: str | None = None
    """The Unix account the command runs as (executors running as root); None: the
    executor's own account. A missing account is created on the node when ``owner`` is set
    (gpupool's ``gp-`` accounts), else the launch fails."""
    owner: str = ""
    """The gpupool user the account belongs to (marks accounts created for it)."""
    job_dir: str = ""
    """The attempt's own directory, owned by ``run_as`` (mode 0700; created if missing):
    ``$GPUPOOL_JOB_DIR``, writable in the sandbox. Empty: none."""
    gpu_devices: tuple[int, ...] = ()
    """Physical GPUs whose device nodes the sandbox lets the command open."""
    readable: tuple[str, ...] = ()
    """Paths the sandbox shows even where they lie in hidden directories (bound read-write:
    the account's own file modes decide what it may change there)."""
    code_archive: str = ""
    """A code archive (gzip'd tar) on this machine to unpack, as the command's account, into
    ``job_dir``/code before the command starts; the working directory is that copy when
    ``workdir`` is None. Empty: none."""
    image_auth: str = ""
    """Podman's auth file (registry logins) for pulling ``image``, on this machine; empty:
    none."""
    image: str = ""
    """The container image to run the command in (empty: on the host, in the sandbox).
    Executors that cannot run images refuse the launch."""
    private_network: bool = False
    """Run the command in a network of its own, with only a loopback: what it listens on is
    reachable neither from the host nor from other workloads, and it reaches none of their
    ports (services' replicas: only reachable through a Unix socket in a directory bound
    into the sandbox, see :mod:`gpupool.executors.replica_front`). Only a sandbox provides
    it: with the sandbox off it has no effect (no sandbox, no isolation); executors that
    cannot provide it (Ray) refuse the launch."""


@dataclass(frozen=True, slots=True)
class Handle:
    """A started attempt, as stored by the server. ``pid`` is the process (group) leader."""

    job_id: str
    attempt: int
    pid: int
    run_dir: str
    log_path: str
    started_at: float
    node: str = "local"
    isolation: str = ""
    """How the processes are isolated, e.g. "bwrap as gp-ada" (empty: not recorded)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Handle:
        return cls(**dict(data))


SUPERVISOR_LOST = "supervisor lost"
"""How a lost outcome's ``reason`` starts when the process that watched the command died
and nothing recorded how the command ended: the command may have succeeded or failed."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended. ``exit_code`` is the process's code (negative: killed by that
    signal); ``lost`` is True when the process vanished without recording its end (then
    ``exit_code`` is None); ``reason`` says why when the executor knows (e.g. "node n1 lost",
    or "supervisor lost: ..." when the command's own end is unknown)."""

    exit_code: int | None
    ended_at: float
    lost: bool = False
    reason: str = ""

    @property
    def unknown(self) -> bool:
        """Lost with its supervisor: whether the command itself failed is not known (a
        process on a lost node, by contrast, was cut short: that is a failure)."""
        return self.lost and SUPERVISOR_LOST in self.reason


class LaunchError(RuntimeError):
    """The command could not be started (no such program, bad working directory, ...)."""


class NodeLostError(LaunchError):
    """The node left the pool: nothing can start there (the job may go elsewhere)."""


class Executor(Protocol):
    def launch(self, spec: LaunchSpec) -> Handle:
        """Start the attempt and return at once. Raises LaunchError with a clear message."""
        ...

    def poll(self, handle: Handle) -> Outcome | None:
        """None while running; the Outcome once it ended (idempotent: same answer again)."""
        ...

    def poll_many(self, handles: list[Handle]) -> list[Outcome | None]:
        """``poll`` of every handle, in order (executors spanning machines do it in one
        round of concurrent calls)."""
        ...

    def terminate(self, handle: Handle) -> None:
        """Ask the whole process group to stop (SIGTERM). Never blocks."""
        ...

    def kill(self, handle: Handle) -> None:
        """Force the whole process group to stop (SIGKILL). Never blocks."""
        ...

    def adopt(self, handle: Handle) -> bool:
        """After a server restart: True if this attempt is still running *and* is the same
        process (not a recycled pid); False if it ended or was lost (``poll`` then tells)."""
        ...

    def find_handle(self, spec: LaunchSpec) -> Handle | None:
        """The handle of an attempt that may have been launched (e.g. just before a server
        crash), or None if it never started."""
        ...

    def abandon(self, spec: LaunchSpec) -> None:
        """Make sure an attempt that ``find_handle`` did not find never runs its command."""
        ...

    def node_address(self, node: str) -> str:
        """The address other nodes reach ``node`` at (MASTER_ADDR of distributed jobs)."""
        ...

    def free_port(self, node: str) -> int:
        """A TCP port free on ``node`` right now (MASTER_PORT of distributed jobs)."""
        ...

    def read_log(self, log_path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of the attempt's log from ``offset`` (b"" at the end),
        never ending inside a UTF-8 character (a bit less: the next offset continues)."""
        ...
