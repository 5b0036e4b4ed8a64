"""What NVML measured of each attempt, kept on its usage record (``usage_records.gpu_*``):
written by the GPU watch (server/gpu_watch.py) after every sample, read back after a
restart, and summed per job for the API's job views.

Contract:

- :func:`save` writes the measured columns of existing records only (a record is opened
  by the loop when the attempt starts); it never touches ``ended_at`` or the allocation,
  so it cannot race the loop's writes of those;
- :func:`measured` answers what :func:`save` wrote, so a restarted server goes on from
  there (nothing counted twice: the values are totals, not increments);
- :func:`usage_of` sums a job's records: allocated GPU-seconds of every attempt (an open
  one until ``now``), used GPU-seconds and measured seconds of the measured ones, the
  peaks over them; ``idle_since`` from the open record only. Jobs none of whose records
  was measured are absent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, tuple_, update

from gpupool.schemas.jobs import GpuUsage, JobView, Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import UsageRecord


@dataclass(frozen=True)
class Measured:
    """The measured columns of one attempt's record."""

    job_id: int
    attempt: int
    used_gpu_s: float
    measured_s: float
    util_peak: float | None
    memory_peak_mib: int | None
    idle_since: float | None


def save(db: Database, rows: Sequence[Measured]) -> None:
    """Write each attempt's measured columns (one transaction; records that do not exist
    are skipped)."""
    if not rows:
        return
    with db.session() as s:
        for r in rows:
            s.execute(
                update(UsageRecord)
                .where(UsageRecord.job_id == r.job_id, UsageRecord.attempt == r.attempt)
                .values(gpu_seconds_used=r.used_gpu_s, gpu_measured_s=r.measured_s,
                        gpu_util_peak=r.util_peak, gpu_memory_peak_mib=r.memory_peak_mib,
                        gpu_idle_since=r.idle_since))


def measured(db: Database, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Measured]:
    """The measured columns of the records of ``keys`` (job id, attempt) that have any."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    with db.read() as s:
        rows = s.execute(
            select(UsageRecord.job_id, UsageRecord.attempt, UsageRecord.gpu_seconds_used,
                   UsageRecord.gpu_measured_s, UsageRecord.gpu_util_peak,
                   UsageRecord.gpu_memory_peak_mib, UsageRecord.gpu_idle_since)
            .where(tuple_(UsageRecord.job_id, UsageRecord.attempt).in_(wanted),
                   UsageRecord.gpu_measured_s.is_not(None))).all()
    return {(j, a): Measured(j, a, used or 0.0, m or 0.0, peak, mem, idle)
            for j, a, used, m, peak, mem, idle in rows}


def usage_of(db: Database, job_ids: Iterable[int], now: float) -> dict[int, GpuUsage]:
    """Each measured job's :class:`GpuUsage` (module docstring), by job id."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    with db.read() as s:
        rows = s.execute(
            select(UsageRecord.job_id, UsageRecord.started_at, UsageRecord.ended_at,
                   UsageRecord.gpu_milli, UsageRecord.gpu_seconds_used,
                   UsageRecord.gpu_measured_s, UsageRecord.gpu_util_peak,
                   UsageRecord.gpu_memory_peak_mib, UsageRecord.gpu_idle_since)
            .where(UsageRecord.job_id.in_(ids))).all()
    by_job: dict[int, list[_Record]] = defaultdict(list)
    for j, started, ended, milli, used, measured_s, peak, memory, idle in rows:
        by_job[int(j)].append(_Record(float(started), ended, int(milli), used, measured_s,
                                      peak, memory, idle))
    found = {}
    for job_id, records in by_job.items():
        usage = _summed(records, now)
        if usage is not None:
            found[job_id] = usage
    return found


@dataclass(frozen=True)
class _Record:
    started: float
    ended: float | None
    gpu_milli: int
    used: float | None
    measured_s: float | None
    util_peak: float | None
    memory_peak_mib: int | None
    idle_since: float | None


def _summed(records: list[_Record], now: float) -> GpuUsage | None:
    held = used = measured_s = weighted = 0.0
    peak: float | None = None
    memory: int | None = None
    idle: float | None = None
    any_measured = False
    for r in records:
        gpus = r.gpu_milli / 1000
        held += gpus * max(0.0, (now if r.ended is None else r.ended) - r.started)
        if r.measured_s is None:
            continue
        any_measured = True
        used += r.used or 0.0
        measured_s += r.measured_s
        weighted += gpus * r.measured_s
        if r.util_peak is not None:
            peak = max(peak or 0.0, r.util_peak)
        if r.memory_peak_mib is not None:
            memory = max(memory or 0, r.memory_peak_mib)
        if r.ended is None and r.idle_since is not None:
            idle = r.idle_since
    if not any_measured:
        return None
    return GpuUsage(
        gpu_seconds=round(held, 3), gpu_seconds_used=round(used, 3),
        measured_s=round(measured_s, 3),
        mean_utilization=round(used / weighted, 4) if weighted > 0 else None,
        peak_utilization=peak, peak_memory_mib=memory,
        idle_since=None if idle is None else datetime.fromtimestamp(idle, UTC))


def attach(db: Database, views: Sequence[JobView], now: float,
           running_only: bool = False) -> None:
    """Set each view's ``gpu_usage`` (:func:`usage_of`); ``running_only``: only the views
    of starting and running jobs are looked up (listings)."""
    wanted = [v for v in views
              if not running_only or v.phase in (Phase.STARTING, Phase.RUNNING)]
    found = usage_of(db, [int(v.id) for v in wanted], now)
    for view in wanted:
        view.gpu_usage = found.get(int(view.id))
