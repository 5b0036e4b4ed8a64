"""Teams, users, tokens and the audit log (admin endpoints) and the caller's identity."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gpupool.schemas.jobs import NAME_PATTERN
from gpupool.schemas.units import finite_number
from gpupool.schemas.values import Number

UNIX_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$"
MAX_TOKEN_LIFETIME_S = 10 * 366 * 86400
# Optional bounded numbers: the bounds come before the validator, else pydantic writes them
# into the OpenAPI as the unknown keywords ``ge``/``le`` (no minimum/maximum) inside ``| None``.
GpuCount = Annotated[float, Field(ge=0, le=100000, allow_inf_nan=False),
                     BeforeValidator(finite_number)]
Lifetime = Annotated[float, Field(gt=0, le=MAX_TOKEN_LIFETIME_S, allow_inf_nan=False),
                     BeforeValidator(finite_number)]


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    quota_gpus: Number = Field(0, ge=0, le=100000, description="Guaranteed GPUs.")
    borrow_limit_gpus: Number = Field(0, ge=0, le=100000, description="GPUs it may borrow.")


class TeamUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quota_gpus: GpuCount | None = None
    borrow_limit_gpus: GpuCount | None = None


class TeamView(BaseModel):
    name: str
    quota_gpus: float
    borrow_limit_gpus: float
    warning: str | None = Field(
        default=None, description="Set by a create or update after which the teams' guaranteed "
                          "quotas add up to more than the pool: they cannot all be honoured "
                          "at once.")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    team: str = Field(pattern=NAME_PATTERN)
    admin: bool = False
    unix_user: str | None = Field(
        default=None,
        pattern=UNIX_NAME_PATTERN,
        description="An existing Unix account the user's workloads run as (server running "
        "as root only). Left out: the server creates gp-<name>. Two users share an account "
        "only when it is named here for both; root only when named here.",
    )


class UserView(BaseModel):
    name: str
    team: str
    admin: bool
    disabled: bool = Field(
        default=False, description="Its tokens are refused; its jobs keep running."
    )
    unix_user: str | None = Field(
        default=None, description="The Unix account its workloads run as; null: the server's own."
    )


class UserDeleted(BaseModel):
    name: str
    tokens_revoked: int
    unix_user: str | None = Field(
        default=None, description="The Unix account it was mapped to."
    )
    unix_removed: bool = Field(default=False, description="The server removed that account.")
    note: str = Field(default="", description="What was left to do by hand, if anything.")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(pattern=NAME_PATTERN)
    expires_in_s: Lifetime | None = Field(
        default=None,
        description="Seconds until the token stops working; null: it never expires.",
    )


class TokenView(BaseModel):
    """A new token: the only answer that ever carries its plaintext."""

    id: int = 0
    user: str
    token: str = Field(description="Shown once; the server keeps only a hash.")
    expires_at: datetime | None = None


class TokenState(StrEnum):
    LIVE = "live"
    EXPIRED = "expired"
    REVOKED = "revoked"


class TokenInfo(BaseModel):
    """A token as listed: never the token itself. ``last_used_at`` is kept to about a
    minute (the server writes it at most once a minute per token)."""

    id: int
    user: str
    state: TokenState
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokensRevoked(BaseModel):
    revoked: list[int] = Field(description="Ids of the tokens this call revoked.")


class AuditEvent(BaseModel):
    """One admin action or refused sign-in, newest first in listings. ``actor``: the user
    who acted (null when unknown, e.g. a bad token); ``address``: the client's address."""

    id: int
    at: datetime
    actor: str | None
    action: str
    target: str
    detail: str
    address: str


class WhoAmI(BaseModel):
    user: str
    team: str
    admin: bool
