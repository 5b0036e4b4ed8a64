"""Cron schedules as pure functions of (schedule, last firing, now, limit): which firings are
due, which run after a downtime (catch-up), and what the concurrency policy does with them.
Times are UNIX seconds in UTC; no clock is read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from croniter import croniter

MISSED_COUNT_CAP = 100_000
"""Missed firings are counted exactly up to this many (a long downtime of a frequent cron)."""


class CronInvalid(ValueError):
    pass


def check(expr: str) -> None:
    """CronInvalid naming the problem unless ``expr`` is a valid 5-field cron expression."""
    if len(expr.split()) != 5:
        raise CronInvalid(f"cron: expected 5 fields (minute hour day month weekday), got {expr!r}")
    if not croniter.is_valid(expr):
        raise CronInvalid(f"cron: not a valid cron expression: {expr!r}")


def next_after(expr: str, when: float) -> float:
    """The first firing strictly after ``when``."""
    return float(croniter(expr, datetime.fromtimestamp(when, UTC)).get_next(float))


@dataclass(frozen=True)
class Due:
    """Firings in (last, now]: ``run`` (oldest first, at most ``limit``, the newest ones)
    and ``missed`` (older firings dropped by the limit)."""

    run: list[float] = field(default_factory=list)
    missed: int = 0


def due(expr: str, last: float, now: float, limit: int) -> Due:
    """What became due since ``last``. After a downtime the newest ``limit`` firings run
    (limit 1: no catch-up, only the latest); older ones are counted as missed."""
    if now <= last:
        return Due()
    limit = max(1, limit)
    # Start a minute late (get_prev is strictly before its start) and drop what lies after now.
    it = croniter(expr, datetime.fromtimestamp(now + 60, UTC))
    newest_first: list[float] = []
    missed = 0
    while True:
        t = float(it.get_prev(float))
        if t <= last:
            break
        if t > now:
            continue
        if len(newest_first) < limit:
            newest_first.append(t)
        else:
            missed += 1
            if missed >= MISSED_COUNT_CAP:
                break
    return Due(run=sorted(newest_first), missed=missed)


@dataclass(frozen=True)
class Decision:
    """What to do with due firings: ``start`` these, ``cancel_active`` runs of the
    schedule first, and ``skip`` these (with the reason)."""

    start: list[float]
    cancel_active: bool = False
    skip: list[float] = field(default_factory=list)
    reason: str = ""


def decide(firings: list[float], active: int, policy: str) -> Decision:
    """The concurrency policy: ``allow`` starts every firing (catch-up runs may overlap);
    ``forbid`` keeps at most one run: nothing starts while one is active, and of several
    due at once only the newest starts; ``replace`` cancels the active runs and starts the
    newest."""
    if not firings:
        return Decision(start=[])
    if policy == "allow":
        return Decision(start=list(firings))
    newest, older = firings[-1], list(firings[:-1])
    if policy == "forbid":
        if active:
            return Decision(start=[], skip=list(firings),
                            reason="forbid: a run of this schedule is still active")
        return Decision(start=[newest], skip=older,
                        reason="forbid: only the newest of several due firings runs")
    if policy == "replace":
        return Decision(start=[newest], cancel_active=active > 0, skip=older,
                        reason="replace: only the newest of several due firings runs")
    raise ValueError(f"concurrency: unknown policy {policy!r} (allow, forbid, replace)")
