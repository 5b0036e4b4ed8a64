"""Read models of the pool: nodes with their GPUs' allocations, and queues with usage."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from gpupool.schemas.cluster import GpuView, NodeView, QueueView
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Node, Team
from gpupool.server.services.identity import Principal

ACTIVE = (Phase.STARTING.value, Phase.RUNNING.value)


def list_nodes(db: Database, principal: Principal) -> list[NodeView]:
    """Every node and GPU; job ids of other teams are hidden from non-admins."""
    with db.read() as s:
        nodes = s.scalars(select(Node).order_by(Node.name)).all()
        jobs = s.execute(
            select(Job.id, Job.team_id, Job.node, Job.gpus, Job.gpu_milli, Job.gpu_memory_mib,
                   Job.spec)
            .where(Job.phase.in_(ACTIVE))
        ).all()
    cpu: dict[str, int] = defaultdict(int)
    mem: dict[str, int] = defaultdict(int)
    milli: dict[tuple[str, int], int] = defaultdict(int)
    gmem: dict[tuple[str, int], int] = defaultdict(int)
    names: dict[tuple[str, int], list[str]] = defaultdict(list)
    for job_id, team_id, node, gpus, gpu_milli, gpu_memory, raw in jobs:
        if node is None:
            continue
        spec = JobSpec.model_validate(raw)
        cpu[node] += round(spec.cpu * 1000)
        mem[node] += spec.memory
        for g in gpus or ():
            milli[(node, g)] += gpu_milli
            gmem[(node, g)] += gpu_memory
            visible = principal.admin or team_id == principal.team_id
            names[(node, g)].append(str(job_id) if visible else "(other team)")
    return [
        NodeView(
            name=n.name,
            cpu_milli=n.cpu_milli,
            memory_mib=n.memory_mib,
            cpu_allocated_milli=cpu[n.name],
            memory_allocated_mib=mem[n.name],
            gpus=[
                GpuView(
                    index=i,
                    model=g["model"],
                    memory_mib=g["memory_mib"],
                    allocated_milli=milli[(n.name, i)],
                    allocated_memory_mib=gmem[(n.name, i)],
                    jobs=names[(n.name, i)],
                )
                for i, g in enumerate(n.gpus)
            ],
            labels=dict(n.labels),
            source=n.source,
            mechanisms=list(n.mechanisms or []),
        )
        for n in nodes
    ]


def list_queues(db: Database, principal: Principal) -> list[QueueView]:
    """Each team's queue: quota, borrowing limit, GPUs in use, borrowed, job counts."""
    with db.read() as s:
        query = select(Team).where(Team.deleted_at.is_(None)).order_by(Team.name)
        if not principal.admin:
            query = query.where(Team.id == principal.team_id)
        teams = s.scalars(query).all()
        counts = s.execute(
            select(Job.team_id, Job.phase, func.count())
            .where(Job.phase.in_((Phase.PENDING.value, *ACTIVE)))
            .group_by(Job.team_id, Job.phase)
        ).all()
        usage = s.execute(
            select(Job.team_id, Job.gpu_milli, Job.gpus).where(Job.phase.in_(ACTIVE))
        ).all()
    used: dict[int, int] = defaultdict(int)
    for team_id, gpu_milli, gpus in usage:
        used[team_id] += gpu_milli * len(gpus or ())
    pending: dict[int, int] = defaultdict(int)
    running: dict[int, int] = defaultdict(int)
    for team_id, phase, count in counts:
        (pending if phase == Phase.PENDING.value else running)[team_id] += count
    return [
        QueueView(
            name=t.name,
            team=t.name,
            quota_gpus=t.quota_milli / 1000,
            borrow_limit_gpus=t.borrow_limit_milli / 1000,
            used_gpus=used[t.id] / 1000,
            borrowed_gpus=max(0, used[t.id] - t.quota_milli) / 1000,
            pending=pending[t.id],
            running=running[t.id],
        )
        for t in teams
    ]
