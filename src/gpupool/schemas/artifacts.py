"""What the API says about a job's artifacts (the files its spec declared, kept when each
attempt ended)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ArtifactFile(BaseModel):
    name: str = Field(description="Path relative to the job's working directory.")
    size: int = Field(description="Bytes.")


class ArtifactAttempt(BaseModel):
    """One attempt's artifacts: ``status`` is ``kept`` (download them), ``collecting`` (the
    attempt just ended), or ``not kept: …`` / ``failed: …`` saying why nothing was kept."""

    attempt: int
    status: str
    files: list[ArtifactFile] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list,
                               description="Declared paths that did not exist at the end.")
    size: int = Field(0, description="Bytes of the archive (gzip'd tar) to download.")
