"""Read models of the pool: nodes with their GPUs' allocations, and queues with usage."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from gpupool.schemas.cluster import GpuShare, GpuView, NodeView, QueueView
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Node, Team
from gpupool.server.launch_env import gpu_memory_limit_mib
from gpupool.server.services.identity import Principal

ACTIVE = (Phase.STARTING.value, Phase.RUNNING.value)


def list_nodes(db: Database, principal: Principal) -> list[NodeView]:
    """Every node and GPU with each running job's share of it; job ids of other teams are
    hidden from non-admins."""
    with db.read() as s:
        nodes = s.scalars(select(Node).order_by(Node.name)).all()
        jobs = s.execute(
            select(Job.id, Job.team_id, Job.node, Job.gpus, Job.ranks, Job.gpu_milli,
                   Job.gpu_memory_mib, Job.spec)
            .where(Job.phase.in_(ACTIVE))
        ).all()
    cards = {n.name: [int(g["memory_mib"]) for g in n.gpus] for n in nodes}
    cpu: dict[str, int] = defaultdict(int)
    mem: dict[str, int] = defaultdict(int)
    asked: dict[tuple[str, int], int] = defaultdict(int)
    shares: dict[tuple[str, int], list[GpuShare]] = defaultdict(list)
    for job_id, team_id, node, gpus, ranks, gpu_milli, gpu_memory, raw in jobs:
        spec = JobSpec.model_validate(raw)
        visible = principal.admin or team_id == principal.team_id
        name = str(job_id) if visible else "(other team)"
        # A multi-node job holds its whole request on every rank's node (as recovery.py
        # restores it); ranks is null for a single-node job.
        places = ([(r["node"], r["gpus"]) for r in ranks] if ranks
                  else [(node, gpus or [])] if node is not None else [])
        for where, held in places:
            cpu[where] += round(spec.cpu * 1000)
            mem[where] += spec.memory
            # The limit the job's processes get (launch_env), from its smallest card there.
            sizes = cards.get(where, [])
            card = min((sizes[g] for g in held if g < len(sizes)), default=0)
            limit = gpu_memory_limit_mib(gpu_milli, gpu_memory, card)
            for g in held:
                asked[(where, g)] += gpu_memory
                shares[(where, g)].append(GpuShare(job=name, milli=gpu_milli,
                                                   memory_limit_mib=limit))
    return [
        NodeView(
            name=n.name,
            cpu_milli=n.cpu_milli,
            memory_mib=n.memory_mib,
            cpu_allocated_milli=cpu[n.name],
            memory_allocated_mib=mem[n.name],
            gpus=[_gpu_view(i, g, asked[(n.name, i)], shares[(n.name, i)])
                  for i, g in enumerate(n.gpus)],
            labels=dict(n.labels),
            source=n.source,
            mechanisms=list(n.mechanisms or []),
        )
        for n in nodes
    ]


def _gpu_view(index: int, card: dict[str, Any], asked_mib: int,
              shares: list[GpuShare]) -> GpuView:
    return GpuView(
        index=index,
        model=card["model"],
        memory_mib=card["memory_mib"],
        allocated_milli=sum(s.milli for s in shares),
        allocated_memory_mib=asked_mib,
        reserved_memory_mib=sum(s.memory_limit_mib for s in shares),
        jobs=[s.job for s in shares],
        shares=shares,
    )


def held_gpus(gpus: list[Any] | None, ranks: list[Any] | None) -> int:
    """How many GPUs a placed job's row holds: every rank's (``ranks``, one ``{"node",
    "gpus"}`` per node of a multi-node job), else its one node's ``gpus``."""
    if ranks:
        return sum(len(rank.get("gpus") or ()) for rank in ranks)
    return len(gpus or ())


def list_queues(db: Database, principal: Principal) -> list[QueueView]:
    """Each team's queue: quota, borrowing limit, GPUs in use (every node's of a multi-node
    job), borrowed, job counts."""
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
            select(Job.team_id, Job.gpu_milli, Job.gpus, Job.ranks).where(Job.phase.in_(ACTIVE))
        ).all()
    used: dict[int, int] = defaultdict(int)
    for team_id, gpu_milli, gpus, ranks in usage:
        used[team_id] += gpu_milli * held_gpus(gpus, ranks)
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
