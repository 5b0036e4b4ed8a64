"""The step executor plugin interface and what every executor shares.

An executor runs one *attempt* of a step. Its state is a plain-data ``handle`` that the
engine stores in the database after every call, so that any call can be repeated after a
server crash (kill -9 included):

- ``create(attempt)``: prepare the attempt (its directory, files); no side effect outside
  it. Returns the first handle.
- ``start(attempt, handle)``: begin the work. Idempotent: called again after a crash between
  starting and recording the returned handle, it finds the work already begun.
- ``status(attempt, handle)``: running, succeeded (with value outputs it produced) or failed
  (with the kind of failure: failure, timeout, error).
- ``stop(attempt, handle)``: ask the work to end (never blocks).
- ``delete(attempt, handle)``: release what the attempt holds (secret files); logs and
  outputs stay.

Every attempt has a directory ``<data dir>/pipelines/runs/<run>/<step>/<attempt>`` (the
server's alone) holding ``log`` (or, for job steps, a ``job`` file naming the job whose log
it is), and command steps a directory of their own in the work dir (``work``, owned by the
run's Unix account, 0700) holding ``outputs/`` (``$GPUPOOL_OUTPUTS``: a file per value
output, ``files/<name>`` per file output) and the attempt's secret files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from gpupool.executors import accounts
from gpupool.executors.local import make_passable
from gpupool.schemas.pipelines import FailureKind, StepSpec
from gpupool.server.launcher import Owner
from gpupool.server.services.identity import Principal

Handle = dict[str, Any]
SECRETS_FILE = "secrets.json"
SECRET_FILES_DIR = "secret-files"


@dataclass
class Attempt:
    """One attempt of one step, with everything rendered (templates resolved).
    ``secrets`` (name → value) and ``mask`` (what to hide in logs) are filled only for
    ``create``; ``argv``/``env`` never hold secret values (the jobs API shows them)."""

    run_id: int
    run_name: str
    step: StepSpec
    number: int
    dir: Path
    principal: Principal
    priority: int = 0
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    mask: list[str] = field(default_factory=list)
    http: dict[str, Any] | None = None
    child: dict[str, Any] | None = None
    owner: Owner = field(default_factory=Owner)
    """Whose run it is: its commands run as that Unix account."""
    work: Path | None = None
    """The attempt's own directory in the work dir (None: ``dir`` serves)."""
    runner: list[str] = field(default_factory=lambda: [
        sys.executable, "-m", "gpupool.server.pipelines.masked_run"])
    """How to start ``masked_run`` as the run's account (an interpreter it can execute)."""

    @property
    def own_dir(self) -> Path:
        return self.work or self.dir

    @property
    def outputs_dir(self) -> Path:
        return self.own_dir / "outputs"

    @property
    def log_path(self) -> Path:
        return self.dir / "log"


@dataclass(frozen=True)
class Status:
    state: Literal["running", "succeeded", "failed"]
    kind: FailureKind = "failure"
    message: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


RUNNING = Status("running")


class StepExecutor(Protocol):
    def create(self, attempt: Attempt) -> Handle: ...

    def start(self, attempt: Attempt, handle: Handle) -> Handle: ...

    def status(self, attempt: Attempt, handle: Handle) -> Status: ...

    def stop(self, attempt: Attempt, handle: Handle) -> None: ...

    def delete(self, attempt: Attempt, handle: Handle) -> None: ...


def write_private(path: Path, data: bytes, account: accounts.Account | None = None) -> None:
    """Write ``data`` to a new 0600 file (replacing an older one), owned by ``account`` when
    given (its folder too)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # never write through something the account left there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if account is not None:
        os.chown(path.parent, account.uid, account.gid)
        os.chown(tmp, account.uid, account.gid)
    os.replace(tmp, path)


def prepare_command(attempt: Attempt) -> list[str]:
    """Create the attempt's own directories (owned by the run's account) and, for a step with
    secrets, its 0600 secret files (the account's, readable by no one else); return the
    command to run (under ``masked_run`` when the step has secrets). Raises AccountError
    when the run's account cannot be found or created, OSError for the files."""
    account = accounts.resolve(attempt.owner.unix_user, attempt.owner.name,
                               attempt.owner.created)
    make_passable(str(attempt.own_dir.parent))
    for folder in (attempt.own_dir, attempt.outputs_dir, attempt.outputs_dir / "files"):
        folder.mkdir(mode=0o700, exist_ok=True)
        if account is not None:
            os.chown(folder, account.uid, account.gid)
    if not attempt.step.secrets:
        return list(attempt.argv)
    env: dict[str, str] = {}
    for ref in attempt.step.secrets:
        value = attempt.secrets[ref.name]
        var = ref.env or ref.name.replace(".", "_").replace("-", "_")
        if ref.as_file:
            path = attempt.own_dir / SECRET_FILES_DIR / ref.name
            write_private(path, value.encode(), account)
            env[var] = str(path)
        else:
            env[var] = value
    secrets_file = attempt.own_dir / SECRETS_FILE
    write_private(secrets_file, json.dumps({"env": env, "mask": attempt.mask}).encode(),
                  account)
    return [*attempt.runner, str(secrets_file), "--", *attempt.argv]


def drop_secrets(attempt: Attempt) -> None:
    """Remove the attempt's plaintext secret files (idempotent)."""
    (attempt.own_dir / SECRETS_FILE).unlink(missing_ok=True)
    folder = attempt.own_dir / SECRET_FILES_DIR
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)


def append_log(attempt: Attempt, line: str) -> None:
    attempt.dir.mkdir(parents=True, exist_ok=True)
    with attempt.log_path.open("a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
