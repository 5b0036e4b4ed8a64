"""The rows a placed job's start writes: *starting* (its placement, the attempt counted) when
it is bound, then *running* (its process handles) once launched.

Contract: each write goes with the event that records it. ``write_starting`` writes in the
caller's transaction and only a row that is still pending with no stop asked (a job cancelled
meanwhile is left as it is); neither function changes anything in memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import update
from sqlalchemy.orm import Session

from gpupool.executors.base import Handle
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.active import Active, handles_json
from gpupool.server.cycle import LiveJob
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, JobEvent
from gpupool.server.services.usage_records import open_attempt


def write_starting(s: Session, live: LiveJob, names: Sequence[str], now: float) -> Active | None:
    """Write placed ``live``'s row as starting (in ``s``; ``names``: the snapshot's node
    names). Returns the job as the loop will track it, or None when its row is no longer
    pending or a stop was asked (nothing written then)."""
    alloc = live.allocations[0]
    ranks = ([{"node": names[a.node], "gpus": list(a.gpus)}
              for a in live.allocations] if len(live.allocations) > 1 else None)
    result = s.execute(
        update(Job)
        .where(Job.id == live.id, Job.phase == Phase.PENDING.value,
               Job.stop_requested.is_(None))
        .values(phase=Phase.STARTING.value, node=names[alloc.node],
                gpus=list(alloc.gpus), gpu_milli=alloc.gpu_milli,
                gpu_memory_mib=alloc.gpu_memory_mib, ranks=ranks,
                attempts=Job.attempts + 1,
                reason="", started_at=now)
        .returning(Job.attempts, Job.name, Job.spec, Job.failures, Job.team_id, Job.user_id)
    ).first()
    if result is None:
        return None
    attempt, name, raw, failures, team_id, user_id = result
    open_attempt(s, live.id, attempt, team_id, user_id, live.amount,
                 live.request.cpu_milli * live.nodes, live.request.memory_mib * live.nodes, now)
    where = ", ".join(
        f"{names[a.node]} GPUs {list(a.gpus)}" if a.gpus
        else names[a.node] for a in live.allocations)
    s.add(JobEvent(job_id=live.id, at=now, phase=Phase.STARTING.value,
                   message=f"placed on {where}"))
    return Active(live, name, JobSpec.model_validate(raw), attempt, failures)


def write_running(db: Database, job_id: int, handles: list[Handle], enforcement: str | None,
                  message: str) -> None:
    """The job's processes were launched: its row says running, with their handles and how
    its GPU share is enforced (the event is stamped with the time of the write)."""
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            phase=Phase.RUNNING.value, handle=handles_json(handles),
            enforcement=enforcement, isolation=handles[0].isolation or None))
        s.add(JobEvent(job_id=job_id, at=time.time(), phase=Phase.RUNNING.value,
                       message=message))
