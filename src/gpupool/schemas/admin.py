"""Teams, users, tokens and the audit log (admin endpoints) and the caller's identity."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from gpupool.schemas.jobs import NAME_PATTERN, TimeLimit
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
MAX_WEIGHT = 1000
Weight = Annotated[float, Field(gt=0, le=MAX_WEIGHT, allow_inf_nan=False),
                   BeforeValidator(finite_number)]

_WEIGHT = ("Fair share: the team's share of the pool, in proportion to the weights of the "
           "teams that want GPUs (more than 0, at most 1000; default 1).")
_COHORT = ("Teams of one cohort lend each other the quota they leave unused; null: in no "
           "cohort.")
_LEND = ("The most GPUs of its unused quota the team lends to its cohort; null: all of it.")
_RUN = ("Seconds a running job of the team's queue without a time limit is assumed to run, "
        "to estimate when a reservation starts (backfill); null: the server's default "
        "(`gpupool up --default-run-limit`, 1 h).")


class TeamCreate(BaseModel):
    """A new team. Serialized, the fair-share fields are left out while at their defaults
    (the server's are the same): a body without them is what servers before fair share
    accept."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    quota_gpus: Number = Field(0, ge=0, le=100000, description="Guaranteed GPUs.")
    borrow_limit_gpus: Number = Field(0, ge=0, le=100000, description="GPUs it may borrow.")
    weight: Weight = Field(default=1.0, description=_WEIGHT)
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN, description=_COHORT)
    lend_limit_gpus: GpuCount | None = Field(default=None, description=_LEND)
    default_run_limit_s: TimeLimit | None = Field(default=None, description=_RUN)

    @model_serializer(mode="wrap")
    def _without_default_shares(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key, default in _SHARE_DEFAULTS.items():
                if key in data and data[key] == default:
                    del data[key]
        return data


_SHARE_DEFAULTS: dict[str, object] = {"weight": 1.0, "cohort": None, "lend_limit_gpus": None,
                                       "default_run_limit_s": None}


class TeamUpdate(BaseModel):
    """What to change; a field left out stays. ``cohort``, ``lend_limit_gpus`` and
    ``default_run_limit_s`` may be sent as null to clear them (no cohort; lend all unused
    quota; the server's default run limit); null for the others means "leave it"."""

    model_config = ConfigDict(extra="forbid")
    quota_gpus: GpuCount | None = None
    borrow_limit_gpus: GpuCount | None = None
    weight: Weight | None = Field(default=None, description=_WEIGHT)
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN, description=_COHORT)
    lend_limit_gpus: GpuCount | None = Field(default=None, description=_LEND)
    default_run_limit_s: TimeLimit | None = Field(default=None, description=_RUN)


class TeamView(BaseModel):
    name: str
    quota_gpus: float
    borrow_limit_gpus: float
    weight: float = Field(default=1.0, description=_WEIGHT)
    cohort: str | None = Field(default=None, description=_COHORT)
    lend_limit_gpus: float | None = Field(default=None, description=_LEND)
    default_run_limit_s: float | None = Field(default=None, description=_RUN)
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
