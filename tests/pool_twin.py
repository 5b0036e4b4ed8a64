"""The middle tier's twin harness: the same arrivals, ends and cancels, on one injected
clock, into a real Controller (real SQLite, in this process, with the scripted executor)
and into the simulator's PoolSimulation, stepping both and reading back what each decided.
The server side's setup is middle_tier.build_controller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import update

from fake_executor import ScriptedExecutor
from gpupool.core.live import LiveJob
from gpupool.core.quota import QueueQuota
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.active import to_request
from gpupool.server.db.tables import Job, Team, User
from gpupool.server.queue_inputs import queue_policy
from gpupool.sim.team_sim import PoolSimulation
from middle_tier import Clock, build_controller

__all__ = ["Clock", "Decisions", "TeamDef", "Twin"]  # Clock: its old home, still imported


@dataclass(frozen=True)
class TeamDef:
    name: str
    quota: float
    borrow: float
    weight: float = 1.0
    cohort: str | None = None


Decisions = dict[str, Any]


class Twin:
    """Both sides of one pool. ``step()`` runs one server step and one simulator cycle at
    the clock's time and returns both sides' decisions."""

    def __init__(self, tmp_path: Path, nodes: int, cards: int, teams: list[TeamDef],
                 **settings: Any) -> None:
        self.clock = Clock()
        self.executor = ScriptedExecutor(self.clock)
        self.settings, self.db, self.controller = build_controller(
            tmp_path, nodes, cards, self.executor, self.clock, tick_seconds=0.1,
            sandbox="none", **settings)
        self.sim = PoolSimulation(
            self.controller.inventory.nodes,
            [QueueQuota(t.name, round(t.quota * 1000), round(t.borrow * 1000), t.cohort)
             for t in teams],
            "bestfit", queue_policy(self.settings), {t.name: t.weight for t in teams},
            self.settings.fairshare_half_life_s)
        self.team_ids: dict[str, int] = {}
        self.user_ids: dict[str, int] = {}
        with self.db.session() as s:
            for t in teams:
                row = Team(name=t.name, quota_milli=round(t.quota * 1000),
                           borrow_limit_milli=round(t.borrow * 1000), weight=t.weight,
                           cohort=t.cohort, created_at=self.clock.now)
                s.add(row)
                s.flush()
                self.team_ids[t.name] = row.id
                user = User(name=f"{t.name}-user", team_id=row.id, created_at=self.clock.now)
                s.add(user)
                s.flush()
                self.user_ids[t.name] = user.id
        self.specs: dict[int, JobSpec] = {}
        self.durations: dict[int, float] = {}

    def submit(self, team: str, spec: JobSpec) -> int:
        """A job arrives now on both sides; returns its id."""
        with self.db.session() as s:
            row = Job(name="j", team_id=self.team_ids[team], user_id=self.user_ids[team],
                      queue=team, phase=Phase.PENDING.value,
                      spec=spec.model_dump(mode="json"), priority=spec.priority,
                      attempts=0, failures=0, created_at=self.clock.now)
            s.add(row)
            s.flush()
            job_id = row.id
        self.specs[job_id] = spec
        request = to_request(job_id, spec, team, self.controller.models)
        self.sim.submit(LiveJob(job_id, team, spec.priority, self.clock.now, request,
                                spec.grace_period_s, nodes=spec.nodes, user=f"{team}-user",
                                time_limit_s=spec.time_limit_s))
        return job_id

    def finish(self, job_id: int) -> None:
        """A running job's processes exit 0 now (one told to stop for a preemption counts as
        preempted on both sides: ``step`` ends it so)."""
        self.executor.end(job_id)
        if self.sim.running[job_id].stopping != "preempt":
            self.sim.end(job_id, self.clock.now, "done")

    def cancel(self, job_id: int) -> None:
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(stop_requested="cancel"))
        self.sim.cancel(job_id, self.clock.now)

    def step(self) -> tuple[Decisions, Decisions]:
        now = self.clock.now
        for job in list(self.sim.running.values()):
            if job.stopping == "preempt":  # the server's victim ended on SIGTERM
                self.sim.end(job.id, now, "preempted")
        before = set(self.controller.active)
        self.controller.last_outcome = None
        self.controller.step()
        server = self._server_view(before)
        outcome = self.sim.step(now)
        names = self.sim.state.names
        sim = {
            "started": sorted((j.id, tuple((names[a.node], a.gpus) for a in j.allocations))
                              for j in outcome.placed),
            "preempted": sorted((v.id, p.id) for v, p in outcome.preemptions),
            "backfilled": sorted(outcome.backfilled.items()),
            "reservations": sorted(
                (j.id, tuple(n for k, n in enumerate(names) if j.reservation.nodes[k]),
                 round(j.reservation.start_at - now, 6))
                for j in self.sim.pending.values() if j.reservation is not None),
        }
        return server, sim

    def _server_view(self, before: set[int]) -> Decisions:
        c = self.controller
        names = c.state.names
        now = self.clock.now
        last = c.last_outcome
        placed = [] if last is None else last.placed
        started = [j for j in placed if j.id in c.active]
        preempted = [] if last is None else [(v.id, p.id) for v, p in last.preemptions]
        return {
            "started": sorted((j.id, tuple((names[a.node], a.gpus) for a in j.allocations))
                              for j in started),
            "preempted": sorted(preempted),
            "backfilled": [] if last is None else sorted(last.backfilled.items()),
            "reservations": sorted(
                (j.id, tuple(n for k, n in enumerate(names) if j.reservation.nodes[k]),
                 round(j.reservation.start_at - now, 6))
                for j in c.pending.values() if j.reservation is not None),
        }
