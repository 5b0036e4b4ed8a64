"""What users ask of their notebooks besides what every workload gets: suspend, resume, and a
one-time address that signs a browser in to one notebook on the gateway.

As for cancel, these functions only write a request (``stop_requested``) and wake the loop,
which alone moves a notebook between phases (``server/watching.py``). Who may ask: whoever
may see the notebook (its team, admins), as for cancel; opening it in a browser is for its
owner and admins only (the gateway lets no one else in either).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import or_, update

from gpupool.schemas.jobs import GatewaySignIn, JobView, Kind, Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, JobEvent
from gpupool.server.services.errors import Conflict, NotFound
from gpupool.server.services.identity import Principal
from gpupool.server.services.jobs import Wake, get_job

MintTicket = Callable[[int, str, float], str]
"""(notebook id, user, now) → a one-time sign-in ticket for the gateway."""


def _notebook(db: Database, principal: Principal, job_id: int) -> JobView:
    view = get_job(db, principal, job_id)
    if view.kind != Kind.NOTEBOOK:
        raise Conflict(f"job {job_id} is not a notebook")
    return view


def _request(db: Database, job_id: int, what: str, phases: tuple[Phase, ...], note: str,
             phase: Phase, now: float) -> bool:
    """Write the request ``what`` on a notebook in one of ``phases`` that has no other
    request (a suspend may replace a resume and back); False when nothing was written."""
    with db.session() as s:
        result = s.execute(update(Job).where(
            Job.id == job_id, Job.phase.in_([p.value for p in phases]),
            or_(Job.stop_requested.is_(None),
                Job.stop_requested.in_(("suspend", "resume")))).values(
            stop_requested=what))
        done = getattr(result, "rowcount", 0)
        if done:
            s.add(JobEvent(job_id=job_id, at=now, phase=phase.value, message=note))
    return bool(done)


LIVE = (Phase.PENDING, Phase.STARTING, Phase.RUNNING)


def suspend(db: Database, principal: Principal, job_id: int, wake: Wake) -> JobView:
    """Ask the loop to suspend the notebook (a pending one at once; a running one once its
    processes stopped). Conflict when it is not a notebook, already suspended, or ended."""
    view = _notebook(db, principal, job_id)
    if view.phase == Phase.SUSPENDED:
        raise Conflict(f"notebook {view.name} is already suspended")
    if view.phase.final:
        raise Conflict(f"notebook {view.name} already ended ({view.phase.value})")
    if not _request(db, job_id, "suspend", LIVE, f"suspend requested by {principal.user}",
                    view.phase, time.time()):
        raise Conflict(f"notebook {view.name} is being stopped already")
    wake()
    return get_job(db, principal, job_id)


def request_idle_suspend(db: Database, job_id: int, note: str, wake: Wake) -> bool:
    """The server's own request: a running notebook idle past its timeout (or past its
    lifetime) is suspended; False when it is no longer running without a request."""
    done = _request(db, job_id, "suspend", (Phase.RUNNING,), note, Phase.RUNNING, time.time())
    if done:
        wake()
    return done


def resume(db: Database, principal: Principal, job_id: int, wake: Wake) -> JobView:
    """Ask the loop to queue a suspended notebook again (placed like any job; its kernels
    start afresh, its files are where they were). Conflict unless it is suspended."""
    view = _notebook(db, principal, job_id)
    if view.phase != Phase.SUSPENDED:
        raise Conflict(f"notebook {view.name} is {view.phase.value}, not suspended")
    if not _request(db, job_id, "resume", (Phase.SUSPENDED,),
                    f"resume requested by {principal.user}", Phase.SUSPENDED, time.time()):
        raise Conflict(f"notebook {view.name} is being cancelled")
    wake()
    return get_job(db, principal, job_id)


def sign_in(db: Database, principal: Principal, job_id: int, gateway_url: str,
            mint: MintTicket) -> GatewaySignIn:
    """A one-time address that signs the caller's browser in to the notebook on the
    gateway's origin, then opens it. Only its owner and admins (others: NotFound, as the
    gateway answers them)."""
    view = _notebook(db, principal, job_id)
    if view.user != principal.user and not principal.admin:
        raise NotFound(f"no job {job_id}")
    if view.phase.final:
        raise Conflict(f"notebook {view.name} already ended ({view.phase.value})")
    ticket = mint(job_id, principal.user, time.time())
    return GatewaySignIn(url=f"{gateway_url}/nb/{job_id}/_gpupool/signin?ticket={ticket}")


def request_resume(db: Database, job_id: int, user: str, wake: Wake) -> bool:
    """Someone who may open the notebook opened its address while it was suspended (the
    gateway asks): queue it again; False when it is not suspended without a request."""
    done = _request(db, job_id, "resume", (Phase.SUSPENDED,),
                    f"resume requested by {user} (opened its address)", Phase.SUSPENDED,
                    time.time())
    if done:
        wake()
    return done
