"""Files that follow a job: the paths its spec declares (``artifacts: [model/, metrics.json]``,
relative to its working directory) are packed when each attempt ends and kept in the
server's artifact store, to be listed and downloaded (``gpupool artifacts JOB``,
``GET /api/v1/jobs/{id}/artifacts``) by its team and admins.

Who reads what: the packing runs as the job's own Unix account
(:mod:`gpupool.executors.artifact_pack`, its source given with ``-c``), so it reads only what
the job could and never follows a link; the server streams its output into
``<data dir>/artifacts/<team>/<job>/<attempt>.tar.gz`` (0600; the data dir is the server's
alone) with ``manifest.json`` beside it saying what was kept, what was missing, or why
nothing was (over the attempt's limit, the team's store full, a node this server cannot
pack on).

Limits: ``attempt_limit_mib`` per attempt (the files' bytes), ``team_limit_mib`` for all of
a team's stored artifacts; an attempt that would pass either keeps nothing and says so.
Packing happens on one background thread after the end is recorded: a job's artifacts
appear shortly after it ends (``status: collecting`` until then).
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpupool.executors import accounts, artifact_pack

log = logging.getLogger("gpupool.artifacts")
MANIFEST = "manifest.json"
_PACK_FILE = artifact_pack.__file__


@functools.cache
def _pack_source() -> str:
    with open(_PACK_FILE) as f:
        return f.read()


@dataclass(frozen=True, slots=True)
class Ended:
    """What the collector needs of an ended attempt."""

    job_id: int
    attempt: int
    team_id: int
    unix_user: str | None
    base: str
    """The job's working directory on this machine (paths are relative to it)."""
    paths: tuple[str, ...]
    local: bool
    """It ran on this server's own machine (Ray nodes: not packed yet)."""


class ArtifactStore:
    """The files under ``home/artifacts`` (see the module)."""

    def __init__(self, home: Path, attempt_limit_mib: int = 1024,
                 team_limit_mib: int = 10240) -> None:
        self.root = home / "artifacts"
        self.attempt_limit = attempt_limit_mib << 20
        self.team_limit = team_limit_mib << 20

    def job_folder(self, team_id: int, job_id: int) -> Path:
        return self.root / str(team_id) / str(job_id)

    def archive(self, team_id: int, job_id: int, attempt: int) -> Path:
        return self.job_folder(team_id, job_id) / f"{attempt}.tar.gz"

    def manifests(self, team_id: int, job_id: int) -> list[dict[str, Any]]:
        """Every attempt's manifest, oldest first ([] when nothing was declared)."""
        path = self.job_folder(team_id, job_id) / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    def team_bytes(self, team_id: int) -> int:
        total = 0
        for path in (self.root / str(team_id)).glob("*/*.tar.gz"):
            try:
                total += path.stat().st_size
            except OSError:
                continue
        return total

    def note(self, team_id: int, job_id: int, entry: dict[str, Any]) -> None:
        """Record (or replace) the attempt's manifest entry."""
        folder = self.job_folder(team_id, job_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        entries = [m for m in self.manifests(team_id, job_id)
                   if m.get("attempt") != entry["attempt"]]
        entries.append(entry)
        entries.sort(key=lambda m: int(m.get("attempt", 0)))
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, folder / MANIFEST)


class ArtifactCollector:
    """Packs ended attempts' artifacts into ``store``, one at a time, on a thread of its own.
    ``python``: an interpreter every account can run."""

    def __init__(self, store: ArtifactStore, python: str) -> None:
        self.store = store
        self.python = python
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="artifacts")

    def submit(self, ended: Ended) -> concurrent.futures.Future[None]:
        self.store.note(ended.team_id, ended.job_id, {"attempt": ended.attempt,
                                                      "status": "collecting"})
        return self._pool.submit(self._collect_logged, ended)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _collect_logged(self, ended: Ended) -> None:
        try:
            entry = self.collect(ended)
        except Exception as exc:  # a bad pack must not end the thread
            log.exception("job %s attempt %s: artifacts not kept", ended.job_id, ended.attempt)
            entry = {"status": f"failed: {exc}"}
        self.store.note(ended.team_id, ended.job_id,
                        {"attempt": ended.attempt, "collected_at": time.time(), **entry})

    def collect(self, ended: Ended) -> dict[str, Any]:
        """Pack the attempt's artifacts (see the module); the manifest entry."""
        if not ended.local:
            return {"status": "not kept: artifacts are packed on this server's own machine "
                              "only (not on Ray nodes yet)"}
        used = self.store.team_bytes(ended.team_id)
        if used >= self.store.team_limit:
            return {"status": f"not kept: the team's artifact store is full ({used >> 20} "
                              f"of {self.store.team_limit >> 20} MiB)"}
        limit = min(self.store.attempt_limit, self.store.team_limit - used)
        target = self.store.archive(ended.team_id, ended.job_id, ended.attempt)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        code, err = self._pack(ended, limit, tmp)
        if code != 0:
            tmp.unlink(missing_ok=True)
            if code == artifact_pack.OVER_LIMIT:
                which = ("the attempt's limit" if limit == self.store.attempt_limit
                         else "what is left of the team's store")
                return {"status": f"not kept: over {which} ({limit >> 20} MiB): {err}"}
            return {"status": f"failed: {err or f'exit {code}'}"}
        summary = json.loads(err) if err.startswith("{") else {"files": [], "missing": []}
        files = [{"name": n, "size": s} for n, s in summary.get("files", [])]
        os.replace(tmp, target)
        return {"status": "kept", "files": files, "missing": summary.get("missing", []),
                "size": target.stat().st_size}

    def _pack(self, ended: Ended, limit: int, out: Path) -> tuple[int, str]:
        """Run the packer as the job's account into ``out``; (exit code, last stderr line)."""
        options: dict[str, object] = {}
        if ended.unix_user and accounts.isolating():
            account = accounts.lookup(ended.unix_user)
            options = {"user": account.uid, "group": account.gid, "extra_groups": []}
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as sink:
            # the file is the server's: the packer writes to its stdout, never to a path
            done = subprocess.run(  # type: ignore[call-overload]
                [self.python, "-I", "-c", _pack_source(), ended.base, str(limit),
                 *ended.paths], stdout=sink, stderr=subprocess.PIPE, text=True, timeout=3600,
                check=False, cwd="/", env={"PATH": "/usr/bin:/bin"}, **options)
        if out.stat().st_size > limit + (16 << 20):  # its own count is the job's to fake
            return artifact_pack.OVER_LIMIT, "the archive is larger than the limit"
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return done.returncode, (lines[-1] if lines else "")
