"""Container images: whether this machine can run a workload in one (rootful podman with
runc), and the ``podman run`` command line that does it.

A workload with an image runs as its owner's account *inside* the container (``--user
UID:GID``), with every capability dropped and no-new-privileges: never as root inside with
host root behind it. Rootful podman is used because rootless podman per owner would need
subordinate uid ranges and an image store per user. Inside: the image's root file system,
the workload's own directories bound at the same paths (its job dir, working directory, the
share dir), the share-enforcement files read-only, and only its own GPU device nodes (CDI
names where the NVIDIA Container Toolkit has written a spec, else the ``/dev/nvidia*`` nodes
and the driver's libraries bind-mounted read-only).

The job's environment never appears on a command line: ``-e NAME`` without a value makes
podman copy the variable from its own environment, which the shim sets from the 0600
``launch.json`` as for any workload.

podman reads :func:`conf_text` (written into the server's data dir and named by
``CONTAINERS_CONF``, never into /etc): on Debian 12's hybrid cgroup layout crun fails, and
the raised resource limits need explicit ``default_ulimits``.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpupool.schemas.image_ref import IMAGE_REFERENCE, IMAGE_RULE, IMAGES_LABEL

PODMAN = "podman"
__all__ = ["IMAGES_LABEL", "ImageError", "Runtime", "detect", "run_argv"]
CONF_ENV = "CONTAINERS_CONF"
REGISTRIES_ENV = "CONTAINERS_REGISTRIES_CONF"
CONTAINER_FILE = "container.name"
"""In an attempt's run dir: the name of its container (for kill and cleanup)."""
CONMON_PID_FILE = "conmon.pid"
"""In an attempt's run dir: the pid of the container's monitor (conmon), whose descendants
are the container's processes (they are not below the shim: GPU figures look here too)."""
PULL_POLICIES = ("never", "missing", "always", "newer")
NETWORKS = ("host", "none")
CONF_TEMPLATE = """\
# Written by gpupool: the podman settings its workloads run with (CONTAINERS_CONF).
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
log_driver = "none"

[engine]
runtime = "runc"
"""
WANTED_LIMITS = {"nofile": 65536, "nproc": 16384}
"""As host workloads get (launch_files.JOB_RLIMITS), capped at this process's hard limits:
runc cannot raise a limit above them."""


def conf_text() -> str:
    """:data:`CONF_TEMPLATE` with this process's limits."""
    capped = {}
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        wanted = WANTED_LIMITS[name]
        capped[name] = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    return CONF_TEMPLATE.format(**capped)
CDI_SPECS = ("/etc/cdi/nvidia.yaml", "/etc/cdi/nvidia.json", "/var/run/cdi/nvidia.yaml",
             "/var/run/cdi/nvidia.json")
DRIVER_LIBRARIES = ("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so",
                    "libnvidia-nvvm.so", "libcudadebugger.so")
DRIVER_PROGRAMS = ("nvidia-smi",)


SYSTEM_DIRS = frozenset({"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32",
                         "proc", "run", "sbin", "sys", "usr"})
"""Top-level directories of the image's own system: nothing of the host is bound over them
(nor over ``/`` itself), or the job would run on the host's files instead of the image's."""


def bindable(path: str) -> str | None:
    """None when ``path`` may be bound into a container at the same place, else why not."""
    real = os.path.realpath(path)
    parts = [p for p in real.split("/") if p]
    if not parts or parts[0] in SYSTEM_DIRS:
        return (f"{path!r} cannot be mounted into an image: it would cover the image's own "
                "system files; use a directory of your own (or none)")
    return None


class ImageError(ValueError):
    """A container launch cannot be made (no runtime here, a bad image name)."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """What runs images here: ``podman`` (its path; empty: none, ``missing`` says why), its
    version, and the ``containers.conf`` it is given."""

    podman: str = ""
    version: str = ""
    conf: str = ""
    missing: str = "not checked"
    cdi: bool = False
    """An NVIDIA CDI spec exists: GPUs are passed as ``nvidia.com/gpu=N``."""
    registries: str = ""
    """A registries.conf of the server's (registries reached over plain HTTP); empty: the
    system's."""

    def env(self) -> dict[str, str]:
        """The variables podman needs to use this runtime's configuration."""
        if not self.enabled:
            return {}
        extra = {REGISTRIES_ENV: self.registries} if self.registries else {}
        return {CONF_ENV: self.conf, **extra}

    @property
    def enabled(self) -> bool:
        return bool(self.podman)

    def describe(self) -> str:
        if self.enabled:
            return f"podman {self.version} (runc{', CDI' if self.cdi else ''})"
        return f"no ({self.missing})"


def valid_image(image: str) -> str | None:
    """None when ``image`` reads as an image reference (``name[:tag][@digest]``, optionally
    with a registry), else why not."""
    return None if IMAGE_REFERENCE.match(image) else IMAGE_RULE


def detect(conf_dir: str, enabled: bool = True, insecure: tuple[str, ...] = ()) -> Runtime:
    """Whether this machine runs images: root (rootful podman), podman and runc installed,
    and ``podman --version`` answering with :func:`conf_text` written to
    ``conf_dir/containers.conf``. ``enabled`` False (the admin turned images off): none.
    ``insecure``: registries (host[:port]) reached over plain HTTP, written to
    ``conf_dir/registries.conf``."""
    if not enabled:
        return Runtime(missing="turned off (GPUPOOL_IMAGES=off)")
    podman = shutil.which(PODMAN)
    if podman is None:
        return Runtime(missing="podman is not installed (apt-get install podman runc)")
    if shutil.which("runc") is None:
        return Runtime(missing="runc is not installed (apt-get install runc)")
    if os.geteuid() != 0:
        return Runtime(missing="the server does not run as root (images need rootful podman)")
    conf = os.path.join(conf_dir, "containers.conf")
    try:
        os.makedirs(conf_dir, exist_ok=True)
        with open(conf + ".tmp", "w") as f:
            f.write(conf_text())
        os.replace(conf + ".tmp", conf)
        found = subprocess.run([podman, "--version"], capture_output=True, text=True,
                               timeout=20, check=False, env=podman_env(conf))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Runtime(missing=f"podman could not run: {exc}")
    if found.returncode != 0:
        return Runtime(missing=f"podman fails here: {' '.join(found.stderr.split())[:160]}")
    version = found.stdout.split()[-1] if found.stdout.split() else "?"
    registries = ""
    if insecure:
        registries = os.path.join(conf_dir, "registries.conf")
        with open(registries, "w") as f:
            f.write("# Written by gpupool: registries its workloads' images come from over "
                    "plain HTTP.\n")
            for host in insecure:
                f.write(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    return Runtime(podman=podman, version=version, conf=conf, missing="",
                   cdi=any(os.path.exists(p) for p in CDI_SPECS), registries=registries)


def podman_env(conf: str, registries: str = "") -> dict[str, str]:
    """The environment podman itself is run with by the server (image checks, cleanup)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           CONF_ENV: conf, "HOME": "/root"}
    if registries:
        env[REGISTRIES_ENV] = registries
    return env


def container_name(job_id: str, attempt: int, run_dir: str) -> str:
    """A name unique to the attempt's process (its rank's run dir ends the name)."""
    rank = os.path.basename(run_dir) if os.path.basename(run_dir).startswith("rank") else ""
    return f"gpupool-{job_id}-{attempt}{'-' + rank if rank else ''}"


def gpu_devices(runtime: Runtime, dev_dir: str, gpus: Sequence[int],
                nodes: Sequence[str]) -> list[str]:
    """``--device`` arguments for physical GPUs ``gpus``: CDI names when a spec exists and the
    GPUs are real (``dev_dir`` is /dev), else each node of ``nodes`` (their host paths, from
    :func:`gpupool.executors.sandbox.gpu_device_nodes`) at /dev/<its name>."""
    if not gpus:
        return []
    if runtime.cdi and dev_dir == "/dev":
        return [arg for g in sorted(set(gpus)) for arg in ("--device", f"nvidia.com/gpu={g}")]
    args: list[str] = []
    for path in nodes:
        args += ["--device", f"{path}:/dev/{os.path.relpath(path, dev_dir)}"]
    return args


def driver_mounts(runtime: Runtime, dev_dir: str, gpus: Sequence[int]) -> list[str]:
    """Read-only binds of the NVIDIA driver's user-space libraries and ``nvidia-smi`` at their
    host paths, for real GPUs without CDI (CDI's spec brings its own); [] otherwise."""
    if not gpus or runtime.cdi or dev_dir != "/dev":
        return []
    paths = set(_driver_library_paths())
    for program in DRIVER_PROGRAMS:
        found = shutil.which(program)
        if found:
            paths.add(os.path.realpath(found))
    args: list[str] = []
    for path in sorted(paths):
        args += ["--volume", f"{path}:{path}:ro"]
    return args


def _driver_library_paths() -> list[str]:
    """Every file ``ldconfig -p`` lists for :data:`DRIVER_LIBRARIES` (and what they link to)."""
    try:
        listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                                timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found: set[str] = set()
    for line in listed.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.split(" ")[0].startswith(DRIVER_LIBRARIES) and os.path.exists(path):
            found.update({path, os.path.realpath(path)})
    return sorted(found)


def run_argv(
    runtime: Runtime, image: str, command: Sequence[str], *, name: str, uid: int, gid: int,
    env: Mapping[str, str], rw: Sequence[str] = (), ro: Sequence[str] = (),
    devices: Sequence[str] = (), cwd: str | None = None, network: str = "host",
    pull: str = "missing", private_network: bool = False, conmon_pidfile: str = "",
    authfile: str = "",
) -> list[str]:
    """The ``podman run`` argv for one workload process (see the module): ``rw``/``ro`` bound
    at the same paths, ``devices`` as from :func:`gpu_devices` (plus :func:`driver_mounts`),
    every variable of ``env`` passed by name (its value comes from podman's own environment),
    ``network`` host or none (``private_network``: none, whatever the policy). ImageError for
    a runtime that is off, an invalid image, pull policy or network, or a path that is not
    :func:`bindable`."""
    if not runtime.enabled:
        raise ImageError(f"this node cannot run images: {runtime.missing}")
    why = valid_image(image)
    if why is not None:
        raise ImageError(f"image {image!r}: {why}")
    if pull not in PULL_POLICIES:
        raise ImageError(f"image pull policy {pull!r}: use one of {', '.join(PULL_POLICIES)}")
    if network not in NETWORKS:
        raise ImageError(f"image network {network!r}: use one of {', '.join(NETWORKS)}")
    for path in [*rw, *ro]:
        if (why := bindable(path)) is not None:
            raise ImageError(why)
    argv = [runtime.podman, "run", "--rm", "--name", name, "--user", f"{uid}:{gid}",
            "--cap-drop", "all", "--security-opt", "no-new-privileges",
            "--network", "none" if private_network else network, "--pull", pull,
            "--pids-limit", "-1", "--init", "--log-driver", "none"]
    if conmon_pidfile:
        argv += ["--conmon-pidfile", conmon_pidfile]
    if authfile:
        argv += ["--authfile", authfile]
    for path in rw:
        real = os.path.realpath(path)
        argv += ["--volume", f"{real}:{real}:rw"]
    for path in ro:
        real = os.path.realpath(path)
        argv += ["--volume", f"{real}:{real}:ro"]
    argv += list(devices)
    for key in sorted(env):
        argv += ["--env", key]
    if cwd:
        argv += ["--workdir", cwd]
    return [*argv, "--", image, *command]
