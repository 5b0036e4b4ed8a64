"""Multi-team workloads for the simulator: the job CSV (``load_workload``, ``write_workload``).

A workload CSV has a header and one row per job::

    job_id,team,user,submit_time,duration,num_gpu,gpu_milli,cpu_milli,memory_mib,gpu_spec,
    priority,time_limit,nodes

Times are seconds (decimals allowed): ``submit_time`` from the start of the replay,
``duration`` the run time once started, ``time_limit`` the limit the user declared (empty:
none). Each of ``nodes`` nodes (column optional, empty or absent = 1) takes ``num_gpu`` GPUs
(1..64), ``cpu_milli`` and ``memory_mib``; ``gpu_milli`` is the share of *each* GPU, 1..1000
(1000 = the whole card), and a share below 1000 is only allowed with ``num_gpu`` 1 and
``nodes`` 1. ``gpu_spec`` names the GPU model ("" = any; the engine decides how to read lists
such as openb's ``A|B``). ``priority`` is the one number that may be negative (below the
default 0). Columns are found by name, in any order; other columns are ignored.

Every problem raises ``WorkloadError`` (a ``TraceError``, hence a ``ValueError``) whose text
is one line naming the file, the line (the header is line 1; the message says "row", as every
trace error of the simulator does) and the column. Reading shares ``sim.trace``'s CSV reader:
strict quoting, UTF-8, bounded line length, blank lines skipped but counted.

The teams' queues (``TeamQueue``, ``load_queues``) live in ``sim.team_queues`` and are
re-exported here.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from gpupool.core.request import MILLI_PER_GPU
from gpupool.sim.team_queues import QueueError, TeamQueue, load_queues
from gpupool.sim.trace import (
    MAX_CPU_MILLI,
    MAX_GPUS_PER_NODE,
    MAX_MEMORY_MIB,
    MAX_TIME_S,
    TraceError,
    _int,
    _records,
    _show,
)

__all__ = [
    "MAX_JOBS", "REQUIRED_COLUMNS", "WORKLOAD_COLUMNS", "QueueError", "TeamQueue",
    "WorkloadError", "WorkloadJob", "load_queues", "load_workload", "open_table",
    "parse_seconds", "write_workload",
]

WORKLOAD_COLUMNS: Final = (
    "job_id", "team", "user", "submit_time", "duration", "num_gpu", "gpu_milli", "cpu_milli",
    "memory_mib", "gpu_spec", "priority", "time_limit", "nodes",
)
"""The columns ``write_workload`` writes, in its order."""
REQUIRED_COLUMNS: Final = WORKLOAD_COLUMNS[:-1]
"""The columns a workload CSV must have (``nodes`` is optional)."""

MAX_JOBS: Final = 2_000_000
"""Data rows one workload may have (all four Helios clusters together have 1.6 M GPU jobs)."""
MAX_NODES_PER_JOB: Final = 4096
MAX_PRIORITY: Final = 10**9


class WorkloadError(TraceError):
    """A malformed workload file. ``str()`` is one line naming the file, the line and the
    column."""


@dataclass(frozen=True, slots=True)
class WorkloadJob:
    """One job of a multi-team workload (see the module for the meaning of each field).

    Contract: ``submit_time``, ``duration`` and the resources are finite and not negative;
    ``num_gpu`` >= 1 and ``nodes`` >= 1; ``gpu_milli`` in 1..1000 and below 1000 only for a
    one-GPU, one-node job; ``time_limit`` is None or positive. Else ``ValueError``.
    """

    job_id: str
    team: str
    user: str
    submit_time: float
    duration: float
    num_gpu: int
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    gpu_spec: str
    priority: int
    time_limit: float | None
    nodes: int = 1

    def __post_init__(self) -> None:
        problem = _job_problem(self)
        if problem:
            raise ValueError(f"job {self.job_id!r}: {problem}")

    @property
    def gpus(self) -> float:
        """GPUs the job holds in all: nodes × num_gpu × gpu_milli / 1000 (0.5 for a half)."""
        return self.nodes * self.num_gpu * self.gpu_milli / MILLI_PER_GPU


def _job_problem(job: WorkloadJob) -> str:
    if not job.job_id:
        return "empty job_id"
    if not job.team:
        return "empty team"
    for name in ("submit_time", "duration"):
        value = getattr(job, name)
        if not (math.isfinite(value) and value >= 0):
            return f"{name} must be a finite number >= 0, got {value}"
    if job.time_limit is not None and not (math.isfinite(job.time_limit) and job.time_limit > 0):
        return f"time_limit must be positive or None, got {job.time_limit}"
    if job.num_gpu < 1 or job.nodes < 1:
        return "num_gpu and nodes must be at least 1"
    if job.cpu_milli < 0 or job.memory_mib < 0:
        return "cpu_milli and memory_mib must not be negative"
    if not 1 <= job.gpu_milli <= MILLI_PER_GPU:
        return f"gpu_milli must be 1..{MILLI_PER_GPU}, got {job.gpu_milli}"
    if job.gpu_milli < MILLI_PER_GPU and (job.num_gpu > 1 or job.nodes > 1):
        return "a share below one GPU is only allowed for one GPU on one node"
    return ""


# ---- workload CSV --------------------------------------------------------------------------


def load_workload(path: str | Path) -> list[WorkloadJob]:
    """Read a workload CSV (see the module) into ``WorkloadJob``s sorted by
    (``submit_time``, file order).

    Raises ``WorkloadError`` naming file, line and column for: a file that cannot be read or
    is empty, a missing required column, a row whose field count differs from the header's,
    an empty ``job_id`` or ``team``, a ``job_id`` already used on an earlier line, a number
    that is not one, negative (except ``priority``), not finite or above its bound, an invalid
    GPU share, or more than ``MAX_JOBS`` rows.
    """
    name = str(path)
    jobs: list[WorkloadJob] = []
    seen: dict[str, int] = {}
    try:
        with open_table(path, REQUIRED_COLUMNS, "workload", MAX_JOBS) as (header, rows):
            for line, cells in rows:
                job = _job(name, header, line, cells)
                if job.job_id in seen:
                    raise WorkloadError(name, line, "job_id", f"job {_show(job.job_id)} "
                                        f"already defined on line {seen[job.job_id]}")
                seen[job.job_id] = line
                jobs.append(job)
    except WorkloadError:
        raise
    except TraceError as exc:  # from the shared reader and number parser of sim.trace
        raise WorkloadError(exc.path, exc.row, exc.column, exc.message) from None
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].submit_time, i))
    return [jobs[i] for i in order]


def _job(name: str, header: Mapping[str, int], line: int, cells: list[str]) -> WorkloadJob:
    def cell(column: str) -> str:
        return cells[header[column]].strip()

    job_id, team = cell("job_id"), cell("team")
    if not job_id:
        raise WorkloadError(name, line, "job_id", "empty job id")
    if not team:
        raise WorkloadError(name, line, "team", "empty team name")
    num_gpu = _int(name, line, "num_gpu", cell("num_gpu"), MAX_GPUS_PER_NODE)
    if num_gpu == 0:
        raise WorkloadError(name, line, "num_gpu", "0: a workload job needs at least one GPU "
                            "(CPU-only jobs are not simulated)")
    milli = _int(name, line, "gpu_milli", cell("gpu_milli"), 10 * MILLI_PER_GPU)
    nodes = 1
    if "nodes" in header and cell("nodes"):
        nodes = _int(name, line, "nodes", cell("nodes"), MAX_NODES_PER_JOB)
        if nodes == 0:
            raise WorkloadError(name, line, "nodes", "0 nodes; leave it empty for 1")
    if not 1 <= milli <= MILLI_PER_GPU:
        raise WorkloadError(name, line, "gpu_milli",
                            f"{milli} is not a share of 1..{MILLI_PER_GPU} per GPU")
    if milli < MILLI_PER_GPU and (num_gpu > 1 or nodes > 1):
        raise WorkloadError(name, line, "gpu_milli",
                            f"{milli} with num_gpu {num_gpu} on {nodes} node(s): only a one-GPU, "
                            f"one-node job may take part of a GPU (use {MILLI_PER_GPU})")
    limit_text = cell("time_limit")
    limit = None
    if limit_text:
        limit = parse_seconds(name, line, "time_limit", limit_text)
        if limit == 0:
            raise WorkloadError(name, line, "time_limit", "0; leave it empty for no limit")
    return WorkloadJob(
        job_id=job_id,
        team=team,
        user=cell("user"),
        submit_time=parse_seconds(name, line, "submit_time", cell("submit_time")),
        duration=parse_seconds(name, line, "duration", cell("duration")),
        num_gpu=num_gpu,
        gpu_milli=milli,
        cpu_milli=_int(name, line, "cpu_milli", cell("cpu_milli"), MAX_CPU_MILLI),
        memory_mib=_int(name, line, "memory_mib", cell("memory_mib"), MAX_MEMORY_MIB),
        gpu_spec=cell("gpu_spec"),
        priority=_priority(name, line, cell("priority")),
        time_limit=limit,
        nodes=nodes,
    )


def _priority(path: str, line: int, text: str) -> int:
    negative = text.startswith("-")
    value = _int(path, line, "priority", text[1:] if negative else text, MAX_PRIORITY)
    return -value if negative else value


def parse_seconds(path: str, line: int, column: str, text: str) -> float:
    """``text`` as a number of seconds in 0..``MAX_TIME_S`` (decimals allowed), or
    ``WorkloadError`` saying what is wrong with it."""
    if not text:
        raise WorkloadError(path, line, column, "empty value; a number of seconds is required")
    if len(text) > 40 or "_" in text:
        raise WorkloadError(path, line, column, f"{_show(text)} is not a number")
    try:
        value = float(text)
    except ValueError:
        raise WorkloadError(path, line, column, f"{_show(text)} is not a number") from None
    if not math.isfinite(value):
        raise WorkloadError(path, line, column, f"{_show(text)} is not a finite number")
    if value < 0:
        raise WorkloadError(path, line, column, f"{text} is negative")
    if value > MAX_TIME_S:
        raise WorkloadError(path, line, column, f"{text} is above the limit of {MAX_TIME_S}")
    return value


def write_workload(path: str | Path, jobs: Sequence[WorkloadJob]) -> None:
    """Write ``jobs`` as a workload CSV in the given order, with every column of
    ``WORKLOAD_COLUMNS``; ``load_workload`` reads back equal jobs (sorted by submit time).
    Whole numbers of seconds are written without a decimal point."""
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(WORKLOAD_COLUMNS)
        for j in jobs:
            writer.writerow([
                j.job_id, j.team, j.user, _num(j.submit_time), _num(j.duration), j.num_gpu,
                j.gpu_milli, j.cpu_milli, j.memory_mib, j.gpu_spec, j.priority,
                "" if j.time_limit is None else _num(j.time_limit), j.nodes,
            ])


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ---- CSV reading shared with the Helios converter -------------------------------------------


@contextmanager
def open_table(
    path: str | Path, required: Sequence[str], kind: str, max_rows: int
) -> Iterator[tuple[dict[str, int], Iterator[tuple[int, list[str]]]]]:
    """``with open_table(path, required, kind, max_rows) as (header, rows)``: the column
    positions by (stripped) header name and an iterator of (line, cells) data rows, each with
    as many cells as the header, read one at a time while the file is open.

    ``WorkloadError`` for a file that cannot be opened, an empty one, a missing required
    column, a row of another width, more than ``max_rows`` rows or none at all; the CSV reader
    of ``sim.trace`` raises ``TraceError`` for invalid CSV, text that is not UTF-8 and
    over-long lines.
    """
    name = str(path)
    with _open(Path(path), kind) as handle:
        records = _records(name, handle)
        first = next(records, None)
        if first is None:
            raise WorkloadError(name, None, None, f"file is empty; a {kind} CSV starts with "
                                f"the header {','.join(required)}")
        line, cells = first
        header: dict[str, int] = {}
        for index, cell in enumerate(cells):
            header.setdefault(cell.strip(), index)
        for column in required:
            if column not in header:
                raise WorkloadError(name, line, column, f"missing required column '{column}'; "
                                    f"a {kind} CSV needs {', '.join(required)}")
        yield header, _rows(name, kind, max_rows, cells, records)


def _rows(name: str, kind: str, max_rows: int, cells: list[str],
          records: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, list[str]]]:
    width, count = len(cells), 0
    for line, row in records:
        count += 1
        if count > max_rows:
            raise WorkloadError(name, line, None, f"more than {max_rows} data rows; split the "
                                f"{kind}")
        if len(row) != width:
            lacking = cells[len(row)].strip() if len(row) < width else None
            raise WorkloadError(name, line, lacking,
                                f"row has {len(row)} fields but the header has {width}")
        yield line, row
    if not count:
        raise WorkloadError(name, None, None, f"no data rows after the header; an empty {kind}?")


def _open(path: Path, kind: str) -> TextIO:
    name = str(path)
    try:
        return path.open(encoding="utf-8-sig")
    except FileNotFoundError:
        raise WorkloadError(name, None, None, f"file not found; give the path of a {kind} CSV"
                            ) from None
    except IsADirectoryError:
        raise WorkloadError(name, None, None, f"is a folder; give the path of a {kind} CSV"
                            ) from None
    except OSError as exc:
        raise WorkloadError(name, None, None,
                            f"cannot read the file ({exc.strerror}); check its permissions"
                            ) from None
