"""Collecting a command step's outputs once it succeeded, and where attempts live on disk.

A step writes each value output ``NAME`` to ``$GPUPOOL_OUTPUTS/NAME`` (text; JSON is kept as
JSON) and each file output to ``$GPUPOOL_OUTPUTS/files/NAME``. The server moves files into
``<data dir>/pipelines/files/<run>/<step>/NAME`` and hands that path to later steps.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from gpupool.executors.local import make_passable
from gpupool.schemas.pipelines import StepSpec

MAX_VALUE_BYTES = 64 * 1024


class OutputError(ValueError):
    pass


def attempt_dir(base: Path, run_id: int, step: str, attempt: int) -> Path:
    """``base`` is ``<data dir>/pipelines``."""
    return base / "runs" / str(run_id) / step / str(attempt)


def files_dir(base: Path, run_id: int, step: str) -> Path:
    return base / "files" / str(run_id) / step


def parse_value(text: str) -> Any:
    """A value output: JSON when it parses as a JSON object or array, else the text
    without its trailing newline."""
    text = text.rstrip("\n")
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def collect(outputs: Path, step: StepSpec, store: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The declared values and the stored paths of the declared files; OutputError naming
    the first one missing or too big."""
    values: dict[str, Any] = {}
    for name in step.outputs:
        data = _read_value(outputs, name)
        values[name] = parse_value(data.decode("utf-8", errors="replace"))
    files: dict[str, str] = {}
    for name in step.files:
        path = outputs / "files" / name
        if not path.exists():
            raise OutputError(f"the step did not write its file {name!r} "
                              f"(expected $GPUPOOL_OUTPUTS/files/{name})")
        make_passable(str(store))  # 0711: later steps of the run's account pass through
        target = store / name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        # a rename: the server never reads what the step left (it may be a symlink to
        # anything); later steps read it as the same account
        os.rename(path, target)
        files[name] = str(target)
    return values, files


def _read_value(outputs: Path, name: str) -> bytes:
    """The bytes of the value output ``name``, read without following a symlink anywhere
    below ``outputs``' parent (the step's account owns that tree: the server must never read
    a file it points elsewhere); OutputError if missing, not a regular file, or too big."""
    missing = OutputError(f"the step did not write its output {name!r} "
                          f"(expected the file $GPUPOOL_OUTPUTS/{name})")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        folder = os.open(outputs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise missing from None
    try:
        fd = os.open(name, flags, dir_fd=folder)
    except OSError:
        raise missing from None
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(f"output {name!r} is not a regular file")
        data = handle.read(MAX_VALUE_BYTES + 1)
    if len(data) > MAX_VALUE_BYTES:
        raise OutputError(f"output {name!r} is over {MAX_VALUE_BYTES // 1024} KiB: "
                          "pass big data as a file output instead")
    return data
