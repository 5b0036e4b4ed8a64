"""The bubblewrap sandbox around a workload's command, and whether this machine offers it.

``bwrap`` is started *as the workload's account* (never as root: as root it would keep every
capability), so it sets the sandbox up in an unprivileged user namespace. Inside: the system
read-only, a private ``/tmp``, ``/dev`` with only the null/zero/random devices plus the
workload's own ``/dev/nvidiaN`` (and the control devices when it has a GPU), private PID and
IPC namespaces (it sees only its own processes), and the hidden paths (the server's data
dir, ``/root``, ``/home``, the work dir's other workloads) replaced by empty directories,
with the workload's own directories bound back read-write. The network is the host's
(distributed training needs it; docs/design/security.md says what follows) unless the launch
asks for a private one (``private_network``: services' replicas): then the sandbox gets a
network namespace of its own with only a loopback (``--unshare-net``; bwrap brings ``lo`` up),
so the ports it listens on are reachable neither from the host nor from other sandboxes, and
it reaches none of theirs. Unix sockets in directories bound into it still connect both ways
(that is how gpupool's gateway reaches a replica: :mod:`gpupool.executors.replica_front`).

Signals: the executor signals the attempt's process group. bwrap's outer process ignores
SIGTERM (so that a graceful stop reaches the command and is not cut short by bwrap dying),
and the command is started through ``env --default-signal=TERM`` so it gets the default
disposition back. bwrap reports a command killed by signal N as exit status 128+N.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpupool.executors.accounts import Account, cannot_enter

AUTO = "auto"
BWRAP = "bwrap"
NONE = "none"
MODES = (AUTO, BWRAP, NONE)
CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
CAPS_DIR = "nvidia-caps"
ENV = "/usr/bin/env"


class SandboxModeError(ValueError):
    """GPUPOOL_SANDBOX names an unknown mode, or bwrap is required and does not work."""


@dataclass(frozen=True, slots=True)
class Sandbox:
    """What every sandbox of one executor shares: ``bwrap`` (its path; empty: no sandbox,
    ``missing`` says why), the paths to hide, and where GPU device nodes are found
    (``dev_dir``: /dev, or a directory of stand-ins in tests)."""

    bwrap: str = ""
    missing: str = "GPUPOOL_SANDBOX=none"
    hide: tuple[str, ...] = ()
    show: tuple[str, ...] = ()
    """Shown read-only to every workload even below /tmp or a hidden path (the work dir's
    interposer and interpreter links)."""
    dev_dir: str = "/dev"
    probe_uid: int = field(default=65534, compare=False)

    @property
    def enabled(self) -> bool:
        return bool(self.bwrap)

    def describe(self) -> str:
        return "bwrap" if self.enabled else f"none ({self.missing})"

    def wrap(
        self,
        command: Sequence[str],
        account: Account,
        rw: Sequence[str] = (),
        ro: Sequence[str] = (),
        gpus: Sequence[int] = (),
        cwd: str | None = None,
        private_network: bool = False,
    ) -> list[str]:
        """The argv that runs ``command`` in the sandbox: ``rw`` bound read-write and ``ro``
        read-only at the same paths (after the hidden paths are emptied, so they may lie
        inside them), the device nodes of physical GPUs ``gpus``, and ``cwd`` as the
        working directory; ``account`` is who runs it (bwrap can only mount over a path
        whose parent that account may search: others are hidden by their own modes).
        ``private_network``: a network namespace of its own, with only a loopback.
        ``command`` unchanged when the sandbox is off (no sandbox: no private network)."""
        if not self.enabled:
            return list(command)
        argv = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--unshare-pid", "--unshare-ipc"]
        if private_network:
            argv.append("--unshare-net")
        hidden: list[str] = []
        for path in sorted({os.path.abspath(p) for p in self.hide}, key=len):
            if any(path.startswith(h.rstrip("/") + "/") for h in hidden):
                continue  # already inside an emptied directory
            parent = os.path.dirname(path) or "/"
            if os.path.isdir(path) and cannot_enter(parent, account) is None:
                hidden.append(path)
                argv += ["--tmpfs", path]
        for path in gpu_device_nodes(self.dev_dir, gpus):
            argv += ["--dev-bind", path, "/dev/" + os.path.relpath(path, self.dev_dir)]
        mounts = ["/dev", "/proc", "/tmp", "/var/tmp", *hidden]
        home = account.home if account.home and os.path.isdir(account.home) else ""
        own_home = [home] if home and any(_inside(home, h) for h in hidden) else []
        for flag, paths in (("--bind", [*own_home, *rw]), ("--ro-bind", [*self.show, *ro])):
            for path in paths:
                real = os.path.realpath(path)
                # a path holding one of the sandbox's own mounts ("/", /root, ...) would put
                # the host back over them: it stays visible read-only, never bound
                if not any(_inside(m, real) for m in mounts):
                    argv += [flag, real, real]
        if cwd:
            argv += ["--chdir", cwd]
        return [*argv, "--", ENV, "--default-signal=TERM", "--", *command]


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies below it."""
    folder = folder.rstrip("/")
    return path == folder or path.startswith(folder + "/") or folder == ""


def gpu_device_nodes(dev_dir: str, gpus: Sequence[int]) -> list[str]:
    """The device nodes a workload with physical GPUs ``gpus`` may open: ``nvidiaN`` of each
    and, when it has any, the control devices and the MIG capability directory (those that
    exist under ``dev_dir``)."""
    if not gpus:
        return []
    names = [f"nvidia{g}" for g in sorted(set(gpus))] + [*CONTROL_DEVICES, CAPS_DIR]
    return [os.path.join(dev_dir, n) for n in names if os.path.exists(os.path.join(dev_dir, n))]


def probe(bwrap: str, uid: int) -> str | None:
    """None if ``bwrap`` starts a sandbox when run as ``uid`` (a user namespace is allowed
    here), else why not."""
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0 and uid != 0:
        kwargs = {"user": uid, "group": uid, "extra_groups": []}
    try:
        result = subprocess.run(  # type: ignore[call-overload]
            [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
             "--", "/bin/true"],
            capture_output=True, text=True, timeout=20, check=False, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} could not run: {exc}"
    if result.returncode != 0:
        return f"{bwrap} fails here: {' '.join(result.stderr.split())[:160]}"
    return None


def detect(mode: str, hide: Sequence[str] = (), dev_dir: str = "/dev",
           probe_uid: int = 65534, show: Sequence[str] = ()) -> Sandbox:
    """The sandbox for ``mode`` (GPUPOOL_SANDBOX): auto → bwrap when it is installed and works
    here, else none with the reason; bwrap → it must work (SandboxModeError otherwise);
    none → off. ``probe_uid``: the account the check runs as (root servers: an unprivileged
    one, as workloads will)."""
    chosen = (mode or AUTO).strip().lower()
    if chosen not in MODES:
        raise SandboxModeError(
            f"GPUPOOL_SANDBOX={mode!r} is not one of {', '.join(MODES)}")
    if chosen == NONE:
        return Sandbox(missing="GPUPOOL_SANDBOX=none", dev_dir=dev_dir)
    path = shutil.which(BWRAP) or ""
    why = "bubblewrap is not installed (apt-get install bubblewrap)" if not path else None
    if path and not os.path.exists(ENV):
        why = f"{ENV} is missing"
    if why is None:
        why = probe(path, probe_uid if os.geteuid() == 0 else os.geteuid())
    if why is not None:
        if chosen == BWRAP:
            raise SandboxModeError(f"GPUPOOL_SANDBOX=bwrap but {why}")
        return Sandbox(missing=why, dev_dir=dev_dir)
    return Sandbox(bwrap=path, missing="", hide=tuple(hide), show=tuple(show),
                   dev_dir=dev_dir, probe_uid=probe_uid)
