"""What the shared queue cycle needs from the server's database: the quota tree (teams,
cohorts, limits), the fair-share weights and decayed usage, and the queue policy from the
settings. Read-only; the loop calls these once per cycle (usage at most once a minute)."""

from __future__ import annotations

from collections.abc import Iterable

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


def queue_policy(settings: Settings) -> QueuePolicy:
    """The server's queue policy (``gpupool up --queue-order/--backfill``)."""
    return QueuePolicy(order=settings.queue_order, backfill=settings.backfill,
                       reserve_after_s=settings.reserve_after_s,
                       default_run_s=settings.default_run_limit_s)


def quota_and_weights(db: Database, running: Iterable[LiveJob]) -> tuple[QuotaBook,
                                                                          dict[str, float]]:
    """The quota book of the live teams with what ``running`` holds counted in it, and each
    team's fair-share weight."""
    with db.session() as s:
        teams = s.execute(
            select(Team.name, Team.quota_milli, Team.borrow_limit_milli, Team.cohort,
                   Team.lend_limit_milli, Team.weight)
            .where(Team.deleted_at.is_(None))
        ).all()
    book = QuotaBook([QueueQuota(n, q, b, c, lend) for n, q, b, c, lend, _ in teams])
    for live in running:
        book.add(live.queue, live.amount)
    return book, {t[0]: float(t[5]) for t in teams}


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
