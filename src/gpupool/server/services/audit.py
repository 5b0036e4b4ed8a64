"""The audit log: every admin action and every refused sign-in, with who, what, on what and
from which address. Admin actions are written in the same transaction as the change they
record, so a row exists iff the change happened.

Refused sign-ins are coalesced, because one client with a bad token can send thousands of
requests a second: at most one row per (address, reason) every ``REFUSAL_WINDOW_S``
seconds. The refusals left out are counted, in memory, and the next row written for that
address and reason says how many there were ("+N more since ..."); a burst that is never
followed by another refusal loses only that count. The count is per server process.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from gpupool.schemas.admin import AuditEvent as AuditView
from gpupool.server.db.database import Database
from gpupool.server.db.tables import AuditEvent
from gpupool.server.services import paging
from gpupool.server.services.errors import Forbidden

if TYPE_CHECKING:  # identity records refusals here: import it for types only
    from gpupool.server.services.identity import Principal

REFUSAL_WINDOW_S = 10.0
LOGIN_REFUSED = "login.refused"
_MAX_KEYS = 10_000

# (address, reason) -> (monotonic time of the last row written, refusals left out since)
_recent: dict[tuple[str, str], tuple[float, int]] = {}
_lock = threading.Lock()


def record(
    s: Session, actor: str | None, action: str, target: str, detail: str = "",
    address: str = "",
) -> None:
    """Add one audit row to the caller's transaction (it is kept iff that commits)."""
    s.add(AuditEvent(
        at=time.time(), actor=actor, action=action, target=target[:200], detail=detail,
        address=address[:100],
    ))


def refused(
    db: Database, address: str, reason: str, actor: str | None = None, target: str = ""
) -> None:
    """Record a refused sign-in, unless one with the same address and reason was written
    less than ``REFUSAL_WINDOW_S`` ago (then it is only counted; see the module doc)."""
    key = (address, reason)
    now = time.monotonic()
    with _lock:
        last = _recent.get(key)
        if last is not None and now - last[0] < REFUSAL_WINDOW_S:
            _recent[key] = (last[0], last[1] + 1)
            return
        if len(_recent) >= _MAX_KEYS:
            _recent.clear()
        _recent[key] = (now, 0)
    detail = reason
    if last is not None and last[1]:
        detail += f" (+{last[1]} more like it from this address since the previous row)"
    with db.session() as s:
        record(s, actor, LOGIN_REFUSED, target, detail, address)


def list_events(db: Database, principal: Principal, limit: int,
                cursor: str | None = None) -> paging.Page[AuditView]:
    """One page of rows, newest first (after ``cursor``'s row when given). Admin only."""
    if not principal.admin:
        raise Forbidden(f"user {principal.user!r} is not an admin: the audit log is admin only")
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if cursor is not None:
        at, last = paging.decode(cursor, "audit", 2)
        query = query.where(or_(AuditEvent.at < at,
                                and_(AuditEvent.at == at, AuditEvent.id < last)))
    with db.read() as s:
        rows = s.scalars(query.limit(limit + 1)).all()
    return paging.page_of(rows, limit, "audit", lambda r: (r.at, r.id), _view)


def _view(r: AuditEvent) -> AuditView:
    return AuditView(
        id=r.id, at=datetime.fromtimestamp(r.at, UTC), actor=r.actor, action=r.action,
        target=r.target, detail=r.detail, address=r.address,
    )
