"""Convert a Helios (SC'21) or Acme (NSDI'24) job log into a workload CSV (``sim.workload``).

Input: a CSV with a header naming at least ``job_id,user,vc,gpu_num,cpu_num,node_num,
submit_time`` and either ``duration`` or ``start_time,end_time`` (the Helios
``cluster_log.csv`` has ``job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,
start_time,end_time,duration,queue``; other columns, ``state`` among them, are ignored).
A time cell is read as seconds when it is a number, else as an ISO 8601 date-time
(``2020-04-01 00:00:07``; naive ones are all taken in one and the same zone, so differences
are exact). Only differences are used, so a file must keep to one of the two.

What each kept row becomes (one ``WorkloadJob``):

* ``team`` = ``vc`` (the virtual cluster), ``user`` = ``user``, ``job_id`` = ``job_id``;
* ``submit_time`` = seconds after the *earliest* submit among the kept jobs;
* ``duration`` = the ``duration`` cell in seconds, or ``end_time - start_time`` when that
  cell is empty or the column absent (Helios writes 0 for a job cancelled before it
  started: such a job is kept, with a run time of 0);
* ``gpu_num`` is the job's total over ``node_num`` nodes (empty: 1 node), so each node asks
  for ``num_gpu = ceil(gpu_num / node_num)`` whole GPUs (``gpu_milli`` 1000): a job whose
  total does not divide evenly is rounded *up* per node, holding a little more than it did;
* ``cpu_milli`` = ``ceil(cpu_num * 1000 / node_num)`` per node (empty ``cpu_num``: 0);
  ``memory_mib`` 0, ``gpu_spec`` "" (any), ``priority`` 0, no time limit.

Rows with ``gpu_num`` 0 are CPU jobs: skipped and counted (``skipped_cpu``). Rows whose cells
cannot be read (an empty or non-numeric GPU count, a bad time, a negative duration, a
repeated job id, more GPUs per node than ``MAX_GPUS_PER_NODE``...) are skipped and counted
(``skipped_bad``), the first one's reason kept in ``first_bad``. A file that is not such a
log at all (unreadable, no header, a missing column, a row of another width) raises
``WorkloadError`` naming the file, line and column, as ``load_workload`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from gpupool.core.request import MILLI_PER_GPU
from gpupool.sim.trace import MAX_CPU_MILLI, MAX_GPUS_PER_NODE, TraceError
from gpupool.sim.workload import (
    MAX_JOBS,
    MAX_NODES_PER_JOB,
    WorkloadError,
    WorkloadJob,
    open_table,
    parse_seconds,
    write_workload,
)

HELIOS_COLUMNS: Final = ("job_id", "user", "vc", "gpu_num", "cpu_num", "node_num",
                         "submit_time")
"""Columns a job log must have, besides ``duration`` or ``start_time`` and ``end_time``."""
MAX_LOG_ROWS: Final = 5_000_000
"""Data rows a job log may have (the largest Helios cluster log has ~1.75 M)."""
_EPOCH: Final = datetime(1970, 1, 1)


@dataclass(frozen=True)
class ConversionSummary:
    """What ``convert_helios`` did: ``jobs`` written, CPU jobs and unreadable rows skipped,
    and why the first unreadable row was skipped ("" when none was)."""

    jobs: int
    skipped_cpu: int
    skipped_bad: int
    first_bad: str = ""


class _Bad(Exception):
    """A row that cannot be converted: skipped and counted."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"column '{column}': {message}")


def read_helios(src: str | Path) -> tuple[list[WorkloadJob], ConversionSummary]:
    """The GPU jobs of the job log ``src`` (see the module), sorted by (submit time, file
    order), and the summary of what was kept and skipped. ``WorkloadError`` for a file that
    is not a job log."""
    name = str(src)
    rows: list[tuple[float, WorkloadJob]] = []
    seen: dict[str, int] = {}
    cpu = bad = 0
    first_bad = ""
    try:
        with open_table(src, HELIOS_COLUMNS, "job log", MAX_LOG_ROWS) as (header, lines):
            if "duration" not in header and not {"start_time", "end_time"} <= set(header):
                raise WorkloadError(name, 1, "duration", "missing column 'duration' (or both "
                                    "'start_time' and 'end_time')")
            for line, cells in lines:
                try:
                    row = _row(name, header, line, cells, seen)
                except _Bad as exc:
                    bad += 1
                    first_bad = first_bad or f"line {line}, {exc}"
                    continue
                if row is None:
                    cpu += 1
                    continue
                if len(rows) >= MAX_JOBS:
                    raise WorkloadError(name, line, None, f"more than {MAX_JOBS} GPU jobs; "
                                        "split the log")
                rows.append(row)
    except WorkloadError:
        raise
    except TraceError as exc:
        raise WorkloadError(exc.path, exc.row, exc.column, exc.message) from None
    origin = min((t for t, _ in rows), default=0.0)
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], i))
    jobs = [_rebase(rows[i], origin) for i in order]
    return jobs, ConversionSummary(len(jobs), cpu, bad, first_bad)


def convert_helios(src: str | Path, dst: str | Path) -> ConversionSummary:
    """Convert the job log ``src`` into the workload CSV ``dst`` (see the module) and say what
    was kept and skipped. ``dst`` is written only when ``src`` could be read."""
    jobs, summary = read_helios(src)
    write_workload(dst, jobs)
    return summary


def _rebase(row: tuple[float, WorkloadJob], origin: float) -> WorkloadJob:
    submit, job = row
    return WorkloadJob(job.job_id, job.team, job.user, submit - origin, job.duration,
                       job.num_gpu, job.gpu_milli, job.cpu_milli, job.memory_mib, job.gpu_spec,
                       job.priority, job.time_limit, job.nodes)


def _row(name: str, header: Mapping[str, int], line: int, cells: list[str],
         seen: dict[str, int]) -> tuple[float, WorkloadJob] | None:
    """(absolute submit time, job with submit 0) of one row; None for a CPU job."""

    def cell(column: str) -> str:
        index = header.get(column)
        return cells[index].strip() if index is not None else ""

    gpus = _count("gpu_num", cell("gpu_num"), required=True)
    if gpus == 0:
        return None
    job_id, team = cell("job_id"), cell("vc")
    if not job_id:
        raise _Bad("job_id", "empty job id")
    if job_id in seen:
        raise _Bad("job_id", f"job {job_id!r} already seen on line {seen[job_id]}")
    if not team:
        raise _Bad("vc", "empty virtual cluster (the team)")
    nodes = _count("node_num", cell("node_num"), required=False) or 1
    if nodes > MAX_NODES_PER_JOB:
        raise _Bad("node_num", f"{nodes} nodes is above the limit of {MAX_NODES_PER_JOB}")
    per_node = math.ceil(gpus / nodes)
    if per_node > MAX_GPUS_PER_NODE:
        raise _Bad("gpu_num", f"{gpus} GPUs on {nodes} node(s) is more than "
                   f"{MAX_GPUS_PER_NODE} per node")
    cpus = _count("cpu_num", cell("cpu_num"), required=False)
    cpu_milli = math.ceil(cpus * 1000 / nodes)
    if cpu_milli > MAX_CPU_MILLI:
        raise _Bad("cpu_num", f"{cpus} CPUs is more than {MAX_CPU_MILLI // 1000} per node")
    submit = _instant("submit_time", cell("submit_time"))
    duration = _duration(name, line, cell)
    seen[job_id] = line
    job = WorkloadJob(job_id=job_id, team=team, user=cell("user"), submit_time=0.0,
                      duration=duration, num_gpu=per_node, gpu_milli=MILLI_PER_GPU,
                      cpu_milli=cpu_milli, memory_mib=0, gpu_spec="", priority=0,
                      time_limit=None, nodes=nodes)
    return submit, job


def _duration(name: str, line: int, cell: Callable[[str], str]) -> float:
    text = cell("duration")
    if text:
        try:
            return parse_seconds(name, line, "duration", text)
        except WorkloadError as exc:
            raise _Bad("duration", exc.message) from None
    start, end = cell("start_time"), cell("end_time")
    if not start or not end:
        raise _Bad("duration", "empty, and start_time or end_time is empty too")
    seconds = _instant("end_time", end) - _instant("start_time", start)
    if seconds < 0:
        raise _Bad("end_time", f"ends {-seconds:g} s before it starts")
    return seconds


def _count(column: str, text: str, *, required: bool) -> int:
    """A whole number >= 0 (``8`` or ``8.0``, as pandas writes it); 0 when empty and not
    required."""
    if not text:
        if required:
            raise _Bad(column, "empty value; a whole number is required")
        return 0
    try:
        value = float(text) if len(text) <= 20 and "_" not in text else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0 and value.is_integer()):
        raise _Bad(column, f"{text[:40]!r} is not a whole number >= 0")
    return int(value)


def _instant(column: str, text: str) -> float:
    """Seconds since an arbitrary fixed origin for a date-time or a number of seconds."""
    if not text:
        raise _Bad(column, "empty time")
    try:
        seconds = float(text) if len(text) <= 40 and "_" not in text else math.nan
    except ValueError:
        seconds = math.nan
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise _Bad(column, f"{text[:40]!r} is neither a date-time "
                       "(2020-04-01 00:00:07) nor seconds") from None
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        return (when - _EPOCH).total_seconds()
    if not math.isfinite(seconds) or seconds < 0:
        raise _Bad(column, f"{text[:40]!r} is not a time")
    return seconds
