"""From an ended attempt (the loop's :class:`~gpupool.server.active.Active`) to what the
artifact collector packs (:class:`~gpupool.server.artifacts.Ended`): whose account, which
directory, which paths."""

from __future__ import annotations

from sqlalchemy import select

from gpupool.server.active import Active
from gpupool.server.artifacts import Ended
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, User
from gpupool.server.workspace import Workspace


def ended_of(db: Database, workspace: Workspace, active: Active, local: bool) -> Ended:
    """The attempt's team, its owner's Unix account and its working directory (its
    ``workdir``, else its unpacked code, else its own directory; rank 0's for a gang; on a
    node of another machine, relative to its own directory there)."""
    job_id = active.live.id
    with db.read() as s:
        row = s.execute(select(Job.team_id, User.unix_user).join(User, User.id == Job.user_id)
                        .where(Job.id == job_id)).one()
    gang = len(active.handles) > 1
    spec = active.spec
    if local:
        own = workspace.job_dir(job_id, active.attempt, 0 if gang else None)
        base = spec.workdir or str(own / "code" if spec.code else own)
    else:  # on its node: relative to the attempt's own directory there
        base = spec.workdir or ("code" if spec.code else "")
    return Ended(job_id, active.attempt, int(row[0]), row[1], base, tuple(spec.artifacts),
                 local, active.handles[0])
