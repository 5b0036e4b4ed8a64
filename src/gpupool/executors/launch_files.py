"""The files and directories a local attempt starts from, as its account will see them:
who runs it, its own directory (``$GPUPOOL_JOB_DIR``), and ``launch.json`` for the shim
(its whole environment, account, umask, limits and working directory)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import subprocess

from gpupool.executors import accounts, shim
from gpupool.executors.accounts import Account, AccountError
from gpupool.executors.base import LaunchError, LaunchSpec
from gpupool.executors.interpreter import job_python
from gpupool.executors.job_env import environment
from gpupool.executors.sandbox import Sandbox

RUN_DIR_ENV = "GPUPOOL_RUN_DIR"
JOB_DIR_ENV = "GPUPOOL_JOB_DIR"
JOB_UMASK = 0o077
JOB_RLIMITS = {"nofile": 65536, "nproc": 16384}


def make_passable(path: str) -> None:
    """Create the directory ``path`` and its missing parents, each new one 0711 (other
    accounts may pass through, not list), whatever the umask."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
            os.chmod(folder, 0o711)


def account_for(spec: LaunchSpec, what: str) -> Account:
    """Who runs the command: ``spec.run_as`` when this process is root (created when
    missing and ``spec.owner`` says whose it is), else this process's own account.
    LaunchError (prefixed with ``what``) when that account cannot be had."""
    try:
        found = accounts.resolve(spec.run_as, spec.owner, bool(spec.owner))
    except AccountError as exc:
        raise LaunchError(f"{what}: {exc}") from None
    return found or accounts.current()


def make_job_dir(spec: LaunchSpec, account: Account) -> str:
    """Create the attempt's own directory (0700, owned by the account; its parents are
    created 0711 by this process, so other accounts can pass but not list them)."""
    if not spec.job_dir:
        return ""
    path = os.path.abspath(spec.job_dir)
    make_passable(os.path.dirname(path))
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path):
        raise OSError(f"{path} is not a directory")
    if accounts.isolating() and (st.st_uid, st.st_gid) != (account.uid, account.gid):
        os.chown(path, account.uid, account.gid)
    os.chmod(path, 0o700)
    return path


def launch_environment(spec: LaunchSpec, account: Account, run_dir: str, job_dir: str,
                       job_path: str) -> dict[str, str]:
    """The whole environment of the attempt's command (:func:`environment` plus gpupool's
    run and job dir variables)."""
    extra = {RUN_DIR_ENV: run_dir}
    if job_dir:
        extra[JOB_DIR_ENV] = job_dir
    return environment(account, job_path, {**spec.env, **extra})


def write_launch_file(
    spec: LaunchSpec, account: Account, run_dir: str, job_dir: str, job_path: str,
    sandbox: Sandbox, log_cap: int = 0, env: dict[str, str] | None = None,
    container: str = "",
) -> str:
    """Write ``launch.json`` for the shim (``log_cap``: the attempt's log cap in bytes, 0:
    none); return the isolation to record. ``env``: the command's environment (default
    :func:`launch_environment`). ``container``: the command is ``podman run`` of this image,
    which the shim starts as root (podman switches to the account inside the container)."""
    if env is None:
        env = launch_environment(spec, account, run_dir, job_dir, job_path)
    launch: dict[str, object] = {
        "env": env, "umask": JOB_UMASK, "rlimits": JOB_RLIMITS,
        "cwd": spec.workdir or job_dir or None, "sandboxed": sandbox.enabled,
        "log_cap": log_cap,
    }
    if container:
        # podman's own directory and limits; --workdir and containers.conf set the command's
        launch.update(cwd="/", sandboxed=False, container=container)
        del launch["rlimits"]
    elif accounts.isolating() and account.uid != os.geteuid():
        launch.update(uid=account.uid, gid=account.gid)
    data = json.dumps(launch, sort_keys=True).encode()
    fd = os.open(os.path.join(run_dir, shim.LAUNCH_FILE + ".tmp"),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(os.path.join(run_dir, shim.LAUNCH_FILE + ".tmp"),
               os.path.join(run_dir, shim.LAUNCH_FILE))
    if container:
        return f"podman {container} as {account.name}"
    who = f"as {account.name}" if accounts.isolating() else (
        f"as {account.name} (not root: not isolated from other jobs)")
    return f"{sandbox.describe()} {who}"


CODE_DIR = "code"
"""Where a job's code archive is unpacked, inside its attempt's own directory."""
_UNPACK_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "code_unpack.py")


@functools.cache
def _unpack_source() -> str:
    with open(_UNPACK_FILE) as f:
        return f.read()


def unpack_code(archive: str, job_dir: str, account: Account) -> str:
    """Unpack ``archive`` into ``job_dir``/code as ``account`` (gpupool.executors.code_unpack,
    fed the archive on its stdin by this process); returns that directory. OSError saying why
    when it cannot be (no job dir, a missing archive, an unsafe member)."""
    if not job_dir:
        raise OSError("the job's code needs the attempt's own directory")
    dest = os.path.join(job_dir, CODE_DIR)
    options: dict[str, object] = {}
    if accounts.isolating() and account.uid != os.geteuid():
        options = {"user": account.uid, "group": account.gid, "extra_groups": []}
    with open(archive, "rb") as source:
        result = subprocess.run(  # type: ignore[call-overload]
            # the source itself, not its path: the account may not read this checkout
            [job_python(), "-I", "-c", _unpack_source(), dest], stdin=source, capture_output=True,
            text=True, timeout=600, check=False, cwd="/", env={"PATH": "/usr/bin:/bin"},
            **options)
    if result.returncode != 0:
        raise OSError(" ".join(result.stderr.split())[:300] or f"exit {result.returncode}")
    return dest


RELATIVE_TO_WORKDIR = ("GPUPOOL_OUTPUTS",)
"""Variables that may hold a path relative to the working directory (a pipeline step shipped
to another machine's node: its outputs folder is in its unpacked code); the executor makes
them absolute, as the node sees them."""


def resolve_relative_env(spec: LaunchSpec) -> LaunchSpec:
    """``spec`` with the relative paths of :data:`RELATIVE_TO_WORKDIR` made absolute against
    its working directory (unchanged without one)."""
    if not spec.workdir:
        return spec
    env = dict(spec.env)
    for key in RELATIVE_TO_WORKDIR:
        value = env.get(key)
        if value and not os.path.isabs(value):
            env[key] = os.path.join(spec.workdir, value)
    return dataclasses.replace(spec, env=env)
