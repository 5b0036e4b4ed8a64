"""Teams, users and tokens (admin endpoints) and the caller's identity."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gpupool.schemas.jobs import NAME_PATTERN


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    quota_gpus: float = Field(0, ge=0, le=100000, description="Guaranteed GPUs.")
    borrow_limit_gpus: float = Field(0, ge=0, le=100000, description="GPUs it may borrow.")


class TeamUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quota_gpus: float | None = Field(None, ge=0, le=100000)
    borrow_limit_gpus: float | None = Field(None, ge=0, le=100000)


class TeamView(BaseModel):
    name: str
    quota_gpus: float
    borrow_limit_gpus: float


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    team: str = Field(pattern=NAME_PATTERN)
    admin: bool = False


class UserView(BaseModel):
    name: str
    team: str
    admin: bool


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(pattern=NAME_PATTERN)


class TokenView(BaseModel):
    user: str
    token: str = Field(description="Shown once; the server keeps only a hash.")


class WhoAmI(BaseModel):
    user: str
    team: str
    admin: bool
