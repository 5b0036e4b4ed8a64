"""A throwaway one-node Slurm for bench/slurm_compare.py: munged, slurmctld and slurmd of
Debian's ``slurm-wlm`` in a temp dir, with 4 GPU gres declared on a machine without GPUs.

Nothing is downloaded or installed here: ``missing()`` names the programs that are absent and
the apt command that brings them. ``one_node_slurm()`` starts the daemons in the foreground
(children of this process), waits until the node is idle, and on the way out, error or not,
cancels what is left, stops the daemons and removes the temp dir.

Slurm 22.05 listens on the wildcard address and has no option to bind elsewhere; where this
process may (root, or CAP_SYS_ADMIN) the whole Slurm side runs in a private network namespace
whose only interface is loopback, so nothing of it is reachable from outside. Where it may
not, the daemons listen on free ports of all addresses for the few minutes of the run (and
the results say so).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol",
            "scancel")
APT = "apt-get install -y slurm-wlm"  # Debian / Ubuntu; it brings munge
CLONE_NEWNET = 0x40000000
ACTIVE = "pending,running,configuring,completing,suspended,requeued,resizing,stopped"


def missing() -> str | None:
    """None when every program the bench runs is on PATH, else a sentence naming them."""
    absent = [p for p in PROGRAMS if shutil.which(p) is None]
    if not absent:
        return None
    return f"not installed: {', '.join(absent)} (install them with: {APT}, which brings munge)"


@dataclass
class SlurmCluster:
    """A started one-node Slurm; ``env`` is what its clients (sbatch, squeue) need."""

    root: Path
    node: str
    gpus: int
    cpus: int
    ctld_port: int
    slurmd_port: int
    isolated_network: bool
    network_note: str
    scheduler_parameters: str = ""
    """slurm.conf SchedulerParameters; empty: Slurm's defaults."""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def jobcomp(self) -> Path:
        """One line per finished job (jobcomp/filetxt): JobId=.. JobState=.. StartTime=.."""
        return self.root / "jobcomp.log"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def cmd(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def version(self) -> str:
        return self.cmd("sinfo", "--version").strip()

    def log_tail(self, lines: int = 15) -> str:
        tails = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / "log" / name
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(tails)

    def active_jobs(self) -> int:
        """Jobs not yet finished (completing ones count: their GPU is not free yet)."""
        return len(self.cmd("squeue", "-h", "-t", ACTIVE, "-o", "%i").split())

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds each daemon has used so far."""
        return {name: proc_cpu_seconds(p.pid) for name, p in self.procs.items()}


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (0.0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_up() -> None:
    """``ip link set lo up`` and ``ip addr add 192.0.2.1/32 dev lo`` without iproute2
    (SIOCSIFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK). Slurm resolves its listening address with
    AI_ADDRCONFIG, which finds nothing while loopback addresses are the only ones: the
    extra one (TEST-NET-1, on lo, in this namespace only) makes it answer."""

    def sockaddr(ifname: bytes, address: str) -> bytes:
        return struct.pack("16sHH4s16x", ifname, socket.AF_INET, 0, socket.inet_aton(address))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, request))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 0x1))
        fcntl.ioctl(s, 0x8916, sockaddr(b"lo:gp", "192.0.2.1"))
        fcntl.ioctl(s, 0x891C, sockaddr(b"lo:gp", "255.255.255.255"))


@contextlib.contextmanager
def private_network() -> Iterator[str | None]:
    """Move this process (and what it starts from now on) into a fresh network namespace
    with only loopback; yields None, or why not (and then nothing changed). Moves back on
    the way out; the namespace disappears with the last process in it."""
    libc = ctypes.CDLL(None, use_errno=True)
    saved = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            yield f"no private network namespace: {os.strerror(ctypes.get_errno())}"
            return
        try:
            _loopback_up()
        except OSError as exc:
            libc.setns(saved, CLONE_NEWNET)
            yield f"no loopback in a private network namespace: {exc}"
            return
        try:
            yield None
        finally:
            if libc.setns(saved, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original network")
    finally:
        os.close(saved)


def write_config(cluster: SlurmCluster) -> None:
    root = cluster.root
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    # gres/gpu drops a GPU without File= ("Removing file-less GPU"), and File= must be a
    # character device: four links to /dev/null stand in for /dev/nvidia0..3. With
    # task/none nothing constrains devices, so the links are never opened.
    for i in range(cluster.gpus):
        (root / f"gpu{i}").symlink_to("/dev/null")
    (root / "gres.conf").write_text(f"Name=gpu File={root}/gpu[0-{cluster.gpus - 1}]\n")
    (root / "plugstack.conf").write_text("")
    (root / "slurm.conf").write_text(f"""\
ClusterName=gpbench
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={cluster.ctld_port}
SlurmdPort={cluster.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/plugstack.conf
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
{"SchedulerParameters=" + cluster.scheduler_parameters if cluster.scheduler_parameters else ""}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={cluster.jobcomp}
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmdParameters=config_overrides
MailProg=/bin/true
GresTypes=gpu
NodeName={cluster.node} NodeAddr=127.0.0.1 CPUs={cluster.cpus} Gres=gpu:{cluster.gpus} \
State=UNKNOWN
PartitionName=bench Nodes={cluster.node} Default=YES MaxTime=INFINITE State=UP
""")


def _start(cluster: SlurmCluster, name: str, args: list[str], ready: Callable[[], bool],
           timeout: float = 30) -> None:
    log = (cluster.root / "log" / f"{name}.out").open("ab")
    proc = subprocess.Popen(args, env=cluster.env, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    cluster.procs[name] = proc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}\n{cluster.log_tail()}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready within {timeout:g} s\n{cluster.log_tail()}")


def _answers(cluster: SlurmCluster, *args: str) -> bool:
    try:
        cluster.cmd(*args, timeout=5)
        return True
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def _node_state(cluster: SlurmCluster) -> str:
    try:
        return cluster.cmd("sinfo", "-h", "-N", "-o", "%T", timeout=5).strip()
    except (RuntimeError, subprocess.TimeoutExpired):
        return ""


def _start_all(cluster: SlurmCluster) -> None:
    root = cluster.root
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))  # its own key: nothing else can talk to this cluster
    key.chmod(0o600)
    socket_path = root / "munge.socket"
    _start(cluster, "munged", [
        "munged", "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
        f"--pid-file={root}/munged.pid", f"--log-file={root}/log/munged.log",
        f"--seed-file={root}/munged.seed", "--num-threads=4",
    ], lambda: _answers(cluster, "munge", "-n", "-S", str(socket_path)))
    _start(cluster, "slurmctld", ["slurmctld", "-D", "-i", "-f", str(cluster.conf)],
           lambda: _answers(cluster, "scontrol", "ping"))
    _start(cluster, "slurmd", ["slurmd", "-D", "-f", str(cluster.conf), "-N", cluster.node],
           lambda: _node_state(cluster) in ("idle", "drained", "invalid"))
    state = _node_state(cluster)
    if state != "idle":
        reason = cluster.cmd("sinfo", "-h", "-R", "-o", "%E", check=False).strip()
        raise RuntimeError(f"node {cluster.node} is {state}, not idle: {reason}\n"
                           f"{cluster.log_tail()}")


def _stop_all(cluster: SlurmCluster) -> None:
    if "slurmctld" in cluster.procs and cluster.procs["slurmctld"].poll() is None:
        with contextlib.suppress(Exception):
            cluster.cmd("scancel", "--quiet", "--partition=bench", check=False, timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and cluster.active_jobs():
                time.sleep(0.2)
    for name in ("slurmd", "slurmctld", "munged"):  # the order they depend on each other
        proc = cluster.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def one_node_slurm(gpus: int = 4, scheduler_parameters: str = "") -> Iterator[SlurmCluster]:
    """A started one-node Slurm with ``gpus`` GPU gres (and ``scheduler_parameters`` in
    slurm.conf, if given); everything gone on the way out."""
    why = missing()
    if why:
        raise RuntimeError(why)
    with private_network() as no_netns:
        root = Path(tempfile.mkdtemp(prefix="gp-slurm-", dir="/tmp"))
        root.chmod(0o711)  # munged wants its socket's directory to be searchable
        # Slurm takes one core per job at least; declaring the GPU count (gres bounds
        # concurrency, as in gpupool where such a job asks 0 CPUs) needs config_overrides
        # on a machine with fewer cores.
        cluster = SlurmCluster(
            root=root,
            node=socket.gethostname().split(".")[0] or "localhost",
            gpus=gpus,
            cpus=max(os.cpu_count() or 1, gpus),
            ctld_port=_free_port(),
            slurmd_port=_free_port(),
            isolated_network=no_netns is None,
            network_note=no_netns or "private network namespace, loopback only",
            scheduler_parameters=scheduler_parameters,
        )
        try:
            write_config(cluster)
            _start_all(cluster)
            yield cluster
        finally:
            try:
                _stop_all(cluster)
            finally:
                shutil.rmtree(root, ignore_errors=True)
