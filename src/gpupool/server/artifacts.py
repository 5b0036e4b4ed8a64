"""Files that follow a job: the paths its spec declares (``artifacts: [model/, metrics.json]``,
relative to its working directory) are packed when each attempt ends and kept in the
server's artifact store, to be listed and downloaded (``gpupool artifacts JOB``,
``GET /api/v1/jobs/{id}/artifacts``) by its team and admins.

Who reads what: the packing runs as the job's own Unix account
(:mod:`gpupool.executors.artifact_pack`, its source given with ``-c``; on a Ray node its agent
runs it and sends the archive back), so it reads only what the job could and never follows a
link; the server streams its output into
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
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpupool.executors import artifact_pack
from gpupool.executors.artifact_collect import pack_as
from gpupool.executors.base import Handle

log = logging.getLogger("gpupool.artifacts")
MANIFEST = "manifest.json"


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
    """It ran on this server's own machine; else on a node of the pool (``handle``'s), whose
    agent packs it, ``base`` then being relative to the attempt's own directory there
    unless absolute."""
    handle: Handle | None = None


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


Remote = Callable[[Handle, str, tuple[str, ...], int, str | None], tuple[int, str, bytes]]
"""Packs on the node of a handle: (handle, base, paths, limit, unix user) → (exit code, last
line, the archive's bytes); e.g. ``RayPool.pack_artifacts``."""


class ArtifactCollector:
    """Packs ended attempts' artifacts into ``store``, one at a time, on a thread of its own;
    ``remote`` packs on other machines' nodes (None: those are not packed)."""

    def __init__(self, store: ArtifactStore, remote: Remote | None = None) -> None:
        self.store = store
        self.remote = remote
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
        if not ended.local and (self.remote is None or ended.handle is None):
            return {"status": "not kept: this pool cannot pack on the node it ran on"}
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
        """Pack as the job's account, here or on its node, into ``out``; (exit code, last
        stderr line of the packer)."""
        if ended.local:
            return pack_as(ended.unix_user, ended.base, ended.paths, limit, str(out))
        assert self.remote is not None and ended.handle is not None
        code, line, data = self.remote(ended.handle, ended.base, ended.paths, limit,
                                       ended.unix_user)
        if len(data) > limit + (16 << 20):
            return artifact_pack.OVER_LIMIT, "the archive is larger than the limit"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as sink:
            sink.write(data)
        return code, line
