"""A local attempt whose spec names an image: the ``podman run`` command that runs it, and
the removal of its container when the attempt is killed (a SIGKILLed ``podman run`` leaves
its container running under conmon, outside the attempt's process group)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpupool.executors.accounts import Account
from gpupool.executors.base import LaunchSpec
from gpupool.executors.containers import (
    CONF_ENV,
    CONMON_PID_FILE,
    CONTAINER_FILE,
    REGISTRIES_ENV,
    Runtime,
    container_name,
    driver_mounts,
    gpu_devices,
    podman_env,
    run_argv,
)
from gpupool.executors.launch_files import launch_environment, write_launch_file
from gpupool.executors.sandbox import Sandbox, gpu_device_nodes


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    """How this machine runs images: the runtime (off: ``Runtime()``), the admin's network
    and pull policies, and the paths every workload in an image sees read-only (the work
    dir's interposer and interpreter links)."""

    runtime: Runtime = field(default_factory=Runtime)
    network: str = "host"
    pull: str = "missing"
    show: tuple[str, ...] = ()


def image_launch(
    policy: ImagePolicy, spec: LaunchSpec, account: Account, run_dir: str, job_dir: str,
    job_path: str, sandbox: Sandbox, log_cap: int,
) -> list[str]:
    """The ``podman run`` command of an attempt with an image; its launch file written (podman
    started as root with the job's environment plus its own configuration)."""
    env = launch_environment(spec, account, run_dir, job_dir, job_path)
    command = container_command(policy, spec, account, env, job_dir, run_dir, sandbox.dev_dir)
    write_launch_file(spec, account, run_dir, job_dir, job_path, sandbox, log_cap,
                      env={**env, **policy.runtime.env()}, container=spec.image)
    return command


def container_command(
    policy: ImagePolicy, spec: LaunchSpec, account: Account, env: Mapping[str, str],
    job_dir: str, run_dir: str, dev_dir: str,
) -> list[str]:
    """The argv that runs ``spec`` in ``spec.image`` as ``account``, with the variables of
    ``env`` (the job's; :data:`~gpupool.executors.containers.CONF_ENV` is podman's own and
    stays out); records the container's name in ``run_dir``. ImageError when it cannot."""
    name = container_name(spec.job_id, spec.attempt, run_dir)
    nodes = gpu_device_nodes(dev_dir, spec.gpu_devices)
    devices = [*gpu_devices(policy.runtime, dev_dir, spec.gpu_devices, nodes),
               *driver_mounts(policy.runtime, dev_dir, spec.gpu_devices)]
    argv = run_argv(
        policy.runtime, spec.image, spec.command, name=name, uid=account.uid, gid=account.gid,
        env={k: v for k, v in env.items() if k not in (CONF_ENV, REGISTRIES_ENV)},
        rw=[p for p in (job_dir, spec.workdir, *spec.readable) if p],
        ro=[p for p in policy.show if os.path.exists(p)], devices=devices,
        cwd=spec.workdir or job_dir or None, network=policy.network, pull=policy.pull,
        private_network=spec.private_network,
        conmon_pidfile=os.path.join(run_dir, CONMON_PID_FILE), authfile=spec.image_auth)
    with open(os.path.join(run_dir, CONTAINER_FILE), "w") as f:
        f.write(name + "\n")
    return argv


def remove_container(policy: ImagePolicy, run_dir: str) -> None:
    """Force-remove the attempt's container, if it ran in one, in the background (never
    blocks; a container already gone is no error)."""
    if not policy.runtime.enabled:
        return
    try:
        with open(os.path.join(run_dir, CONTAINER_FILE)) as f:
            name = f.read().strip()
    except OSError:
        return
    if not name:
        return

    def remove() -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([policy.runtime.podman, "rm", "--force", "--time", "0", name],
                           capture_output=True, timeout=60, check=False,
                           env=podman_env(policy.runtime.conf))

    threading.Thread(target=remove, name=f"podman-rm-{name}", daemon=True).start()
