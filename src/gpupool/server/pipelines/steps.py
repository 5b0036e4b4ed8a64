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

Every attempt has a directory ``<data dir>/pipelines/runs/<run>/<step>/<attempt>`` holding
``outputs/`` (``$GPUPOOL_OUTPUTS``: a file per value output, ``files/<name>`` per file output)
and ``log`` (or, for job steps, a ``job`` file naming the job whose log it is).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from gpupool.schemas.pipelines import FailureKind, StepSpec
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

    @property
    def outputs_dir(self) -> Path:
        return self.dir / "outputs"

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


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file (replacing an older one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def prepare_command(attempt: Attempt) -> list[str]:
    """Create the attempt's directories and, for a step with secrets, its 0600 secret files;
    return the command to run (under ``masked_run`` when the step has secrets)."""
    (attempt.outputs_dir / "files").mkdir(parents=True, exist_ok=True)
    if not attempt.step.secrets:
        return list(attempt.argv)
    env: dict[str, str] = {}
    for ref in attempt.step.secrets:
        value = attempt.secrets[ref.name]
        var = ref.env or ref.name.replace(".", "_").replace("-", "_")
        if ref.as_file:
            path = attempt.dir / SECRET_FILES_DIR / ref.name
            write_private(path, value.encode())
            env[var] = str(path)
        else:
            env[var] = value
    secrets_file = attempt.dir / SECRETS_FILE
    write_private(secrets_file, json.dumps({"env": env, "mask": attempt.mask}).encode())
    return [sys.executable, "-m", "gpupool.server.pipelines.masked_run", str(secrets_file),
            "--", *attempt.argv]


def drop_secrets(attempt: Attempt) -> None:
    """Remove the attempt's plaintext secret files (idempotent)."""
    (attempt.dir / SECRETS_FILE).unlink(missing_ok=True)
    folder = attempt.dir / SECRET_FILES_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
        folder.rmdir()


def append_log(attempt: Attempt, line: str) -> None:
    attempt.dir.mkdir(parents=True, exist_ok=True)
    with attempt.log_path.open("a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
