"""Reading a run's step logs, every attempt in order, with the step's secrets masked.

Commands that use secrets already run under ``masked_run`` (the log on disk holds no secret);
masking again here also covers HTTP headers and any value that reached a log another way.
"""

from __future__ import annotations

from pathlib import Path

from gpupool.schemas.pipelines import PipelineLogs, PipelineSpec, RunState
from gpupool.server.db.database import Database
from gpupool.server.pipelines import runs
from gpupool.server.pipelines.outputs import attempt_dir
from gpupool.server.pipelines.secrets import SecretStore, mask, mask_terms
from gpupool.server.pipelines.step_job import JOB_FILE
from gpupool.server.services.errors import NotFound, ServiceError
from gpupool.server.services.identity import Principal

MAX_PER_ATTEMPT = 1 << 20


def _read(path: Path) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        data = handle.read(MAX_PER_ATTEMPT)
    return data.decode("utf-8", errors="replace")


def read(db: Database, principal: Principal, run_id: int, step: str | None, base: Path,
         runs_dir: Path, store: SecretStore) -> PipelineLogs:
    """The logs of ``step`` (every step when None) of a run the caller may see."""
    run, rows = runs.load(db, principal, run_id)
    if step is not None and step not in {r.name for r in rows}:
        raise NotFound(f"pipeline run {run_id} has no step {step!r}")
    spec = PipelineSpec.model_validate(run.spec)
    try:
        values = store.values(run.team_id, runs.secret_names(spec))
    except ServiceError:  # a secret deleted since: mask what is still known
        values = {}
        for name in runs.secret_names(spec):
            try:
                values.update(store.values(run.team_id, [name]))
            except ServiceError:
                continue
    terms = mask_terms(values.values())
    parts: list[str] = []
    for row in rows:
        if step is not None and row.name != step:
            continue
        if row.reused_from is not None and row.attempt == 0:
            parts.append(f"==> {row.name}: outputs reused from run {row.reused_from} <==\n")
        for number in range(1, row.attempt + 1):
            folder = attempt_dir(base, run_id, row.name, number)
            job = folder / JOB_FILE
            path = runs_dir / job.read_text().strip() / "log" if job.is_file() else \
                folder / "log"
            parts.append(f"==> {row.name} (attempt {number}) <==\n")
            parts.append(mask(_read(path), terms))
    return PipelineLogs(data="".join(parts), complete=RunState(run.state).final)
