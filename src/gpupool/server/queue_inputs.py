"""What the shared queue cycle needs from the server's database: the quota tree (teams,
cohorts, limits), the fair-share weights and decayed usage, and the queue policy from the
settings. Read-only; the loop calls these once per cycle (usage at most once a minute)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import select

from gpupool.core.fairshare import FairShare
from gpupool.core.live import LiveJob
from gpupool.core.queue_order import QueuePolicy
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Team
from gpupool.server.services.usage_records import decayed_usage, decayed_usage_by_user
from gpupool.server.settings import Settings

USAGE_REFRESH_S = 60.0
"""How often decayed usage is read again from the records (it changes slowly: a half-life
is days; what is held now is counted live by the cycle)."""


def queue_policy(settings: Settings, run_s_by_queue: dict[str, float] | None = None
                 ) -> QueuePolicy:
    """The server's queue policy (``gpupool up --queue-order/--backfill``,
    ``--default-run-limit``), with the queues' own default run limits (``run_s_by_queue``;
    ``QueueInputs.run_limits``)."""
    return QueuePolicy(order=settings.queue_order, backfill=settings.backfill,
                       reserve_after_s=settings.reserve_after_s,
                       default_run_s=settings.default_run_limit_s,
                       run_s_by_queue=run_s_by_queue or {})


class QueueInputs(NamedTuple):
    book: QuotaBook
    """The quota tree, with what the running jobs hold counted in it."""
    weights: dict[str, float]
    """Each live team's fair-share weight."""
    run_limits: dict[str, float]
    """The default run limit of each queue that has its own (``gpupool admin team set
    --default-run-limit``); the others use the server's."""


def quota_and_weights(db: Database, running: Iterable[LiveJob]) -> QueueInputs:
    """What the live teams' rows say for this cycle, with what ``running`` holds counted in
    the quota book."""
    with db.read() as s:
        teams = s.execute(
            select(Team.name, Team.quota_milli, Team.borrow_limit_milli, Team.cohort,
                   Team.lend_limit_milli, Team.weight, Team.default_run_limit_s)
            .where(Team.deleted_at.is_(None))
        ).all()
    book = QuotaBook([QueueQuota(n, q, b, c, lend) for n, q, b, c, lend, _, _ in teams])
    for live in running:
        book.add(live.queue, live.amount)
    return QueueInputs(book, {t[0]: float(t[5]) for t in teams},
                       {t[0]: float(t[6]) for t in teams if t[6] is not None})


class UsageCache:
    """Decayed usage per team and user, read from the usage records at most every
    ``USAGE_REFRESH_S`` seconds."""

    def __init__(self, db: Database, half_life_s: float) -> None:
        self.db = db
        self.half_life_s = half_life_s
        self._read_at: float | None = None
        self._teams: dict[str, float] = {}
        self._users: dict[tuple[str, str], float] = {}

    def shares(self, weights: dict[str, float], now: float) -> FairShare:
        if self._read_at is None or now - self._read_at >= USAGE_REFRESH_S or now < self._read_at:
            # ended attempts only: the cycle counts what is held now itself
            self._teams = decayed_usage(self.db, now, self.half_life_s, ended_only=True)
            self._users = decayed_usage_by_user(self.db, now, self.half_life_s, ended_only=True)
            self._read_at = now
        shares = FairShare(weights, self.half_life_s, dict(self._teams), dict(self._users),
                           as_of=self._read_at)
        shares.decay_to(now)
        return shares

    def forget(self) -> None:
        """Read again on the next cycle (an attempt ended: its usage is final now)."""
        self._read_at = None
