"""How this server keeps workloads apart, set up once at start: private data dir, the work
dir, the sandbox, and the lines ``gpupool up`` prints about them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gpupool.executors import accounts
from gpupool.executors.container_launch import ImagePolicy
from gpupool.executors.containers import Runtime
from gpupool.executors.containers import detect as detect_runtime
from gpupool.executors.local import LocalExecutor
from gpupool.executors.sandbox import Sandbox, SandboxModeError, detect
from gpupool.server.settings import Settings
from gpupool.server.workspace import Workspace

if TYPE_CHECKING:
    from gpupool.server.loop_port import LoopPort

DEV_DIR_ENV = "GPUPOOL_DEV_DIR"
"""Where GPU device nodes are looked up (default /dev; tests point it at stand-ins)."""


@dataclass
class Isolation:
    workspace: Workspace
    sandbox: Sandbox
    interposer: str | None
    """The interposer as published in the work dir (None: none)."""
    lines: list[str] = field(default_factory=list)
    images: ImagePolicy = field(default_factory=ImagePolicy)
    """How this machine runs workloads' container images (its runtime off: it does not)."""


def private_data_dir(home: Path) -> None:
    """Make the data dir the server's alone: 0700, and every file the server creates from
    now on 0600 (umask 077). Files an older version left readable are tightened too."""
    os.umask(0o077)
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    for path in home.iterdir():
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o600)


def set_up(settings: Settings, interposer: str | None) -> Isolation:
    """Prepare the work dir and choose the sandbox (GPUPOOL_SANDBOX); raises OSError if the
    work dir cannot be created, SandboxModeError for a bad or unusable mode."""
    workspace = Workspace(settings.jobs_root)
    published = workspace.prepare(interposer)
    sandbox = local_sandbox(settings, workspace)
    images = image_policy(settings, workspace)
    lines = [*startup_lines(workspace, sandbox), f"container images: {images.runtime.describe()}"]
    return Isolation(workspace, sandbox, published, lines, images)


def image_policy(settings: Settings, workspace: Workspace) -> ImagePolicy:
    """How workloads' images run here (GPUPOOL_IMAGES, _IMAGE_NETWORK, _IMAGE_PULL); podman's
    configuration lives in the data dir. Nodes of other machines (Ray) run none."""
    if settings.ray:
        return ImagePolicy(Runtime(missing="not on Ray nodes yet"))
    insecure = tuple(h.strip() for h in settings.image_insecure_registries.split(",")
                     if h.strip())
    runtime = detect_runtime(str(settings.home / "containers"), settings.images != "off",
                             insecure)
    return ImagePolicy(runtime, settings.image_network, settings.image_pull,
                       (str(workspace.lib), str(workspace.bin)))


def local_sandbox(settings: Settings, workspace: Workspace) -> Sandbox:
    """The sandbox of workloads on this machine: it hides the data dir, /root, /home and the
    work dir's per-workload trees."""
    hide = [str(settings.home), "/root", "/home", *workspace.hidden()]
    return detect(settings.sandbox, hide, os.environ.get(DEV_DIR_ENV, "/dev"),
                  show=[str(workspace.lib), str(workspace.bin)])


def shell_executor(settings: Settings, controller: LoopPort) -> LocalExecutor:
    """What runs pipeline shell steps on this machine: the controller's own executor when it
    is local (same sandbox and PATH as jobs), else one set up the same way."""
    if isinstance(controller.executor, LocalExecutor):
        return controller.executor
    workspace = controller.launcher.workspace
    try:
        sandbox = local_sandbox(settings, workspace)
    except SandboxModeError:
        sandbox = Sandbox(missing="bwrap does not work on the server's machine")
    return LocalExecutor(sandbox=sandbox, job_path=workspace.job_path())


def startup_lines(workspace: Workspace, sandbox: Sandbox) -> list[str]:
    """What ``gpupool up`` says about isolation, plainly."""
    if accounts.isolating():
        who = "jobs run as their owner's Unix account (gp-<user> unless an admin names one)"
    else:
        me = accounts.current().name
        who = (f"jobs run as {me}, like this server: they are NOT isolated from each other "
               "or from the server's files (run gpupool up as root to isolate them)")
    lines = [who]
    if sandbox.enabled:
        lines.append("jobs are sandboxed with bubblewrap (private /tmp, PIDs and IPC, the "
                     "system read-only, only their own GPUs)")
    else:
        lines.append(f"jobs are NOT sandboxed: {sandbox.missing}")
    lines.append(f"job files under {workspace.root}; jobs get python = {workspace.python}")
    return lines
