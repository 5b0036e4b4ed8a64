"""The one body of every error answer of the API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    """``{"detail": "..."}``: one readable sentence; a 422 names each bad field in it
    (``field: problem; other.field: problem``), never FastAPI's array of error objects."""

    model_config = ConfigDict(extra="forbid")

    detail: str
