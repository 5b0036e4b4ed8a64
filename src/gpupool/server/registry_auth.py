"""The registry logins of a job's team, as podman's auth file (``--authfile``): read from the
team's secrets named ``registry.*`` (schemas/registry.py; encrypted at rest like every team
secret), decrypted only at launch, written 0600 into the attempt's run dir (the server's: the
job can neither read it nor find it in its container)."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from gpupool.schemas.registry import PREFIX, RegistryLogin
from gpupool.server.db.database import Database
from gpupool.server.db.pipeline_tables import PipelineSecret
from gpupool.server.db.tables import Job
from gpupool.server.pipelines.secrets import SecretStore
from gpupool.server.services.errors import Invalid

log = logging.getLogger("gpupool.images")
AUTH_FILE = "registry-auth.json"


class RegistryAuth:
    """``auth_file(job_id, folder)``: the job's team's logins written to ``folder``, or None
    when the team has none."""

    def __init__(self, db: Database, home: Path) -> None:
        self.db = db
        self.home = home
        self._store: SecretStore | None = None

    @property
    def store(self) -> SecretStore:
        if self._store is None:  # the key is read (or made) when a login is first needed
            self._store = SecretStore(self.db, self.home)
        return self._store

    def logins(self, team_id: int) -> list[RegistryLogin]:
        with self.db.read() as s:
            names = list(s.scalars(select(PipelineSecret.name).where(
                PipelineSecret.team_id == team_id, PipelineSecret.name.startswith(PREFIX))))
        if not names:
            return []
        try:
            values = self.store.values(team_id, names)
        except Invalid as exc:
            log.warning("team %s: registry logins not readable: %s", team_id, exc)
            return []
        found = []
        for name, text in sorted(values.items()):
            try:
                found.append(RegistryLogin.model_validate_json(text))
            except ValidationError:
                log.warning("team %s: secret %s is not a registry login; ignored", team_id,
                            name)
        return found

    def auth_file(self, job_id: int, folder: Path) -> str | None:
        with self.db.read() as s:
            team = s.scalar(select(Job.team_id).where(Job.id == job_id))
        logins = self.logins(int(team)) if team is not None else []
        if not logins:
            return None
        auths: dict[str, Any] = {
            login.registry: {"auth": base64.b64encode(
                f"{login.username}:{login.password}".encode()).decode()}
            for login in logins}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / AUTH_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f)
        return str(path)
