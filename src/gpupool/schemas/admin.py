"""Teams, users, tokens and the audit log (admin endpoints) and the caller's identity."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from gpupool.schemas.jobs import NAME_PATTERN, IdleTimeout, TimeLimit
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
_NB_IDLE = ("Seconds a notebook of the team without its own `idle_timeout_s` may be idle "
            "before it is suspended (at least 5, at most 365 days, and at most the team's "
            "maximum, else the server's); null: the server's default (`gpupool up "
            "--notebook-idle-timeout`, 30 min).")
_NB_MAX_IDLE = ("The longest `idle_timeout_s` a notebook of the team may ask for (at least 5 "
                "seconds, at most 365 days); null: the server's maximum (`gpupool up "
                "--notebook-max-idle-timeout`, 1 d).")
_NB_LIFETIME = ("Seconds a notebook of the team may run before it is suspended (more than 0, "
                "at most 365 days); null: the server's (`gpupool up --notebook-max-lifetime`, "
                "7 d).")


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
    notebook_idle_timeout_s: IdleTimeout | None = Field(default=None, description=_NB_IDLE)
    notebook_max_idle_timeout_s: IdleTimeout | None = Field(default=None,
                                                            description=_NB_MAX_IDLE)
    notebook_max_lifetime_s: TimeLimit | None = Field(default=None, description=_NB_LIFETIME)

    @model_serializer(mode="wrap")
    def _without_default_shares(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key, default in _SHARE_DEFAULTS.items():
                if key in data and data[key] == default:
                    del data[key]
        return data

    @model_validator(mode="after")
    def _idle_under_its_max(self) -> TeamCreate:
        _check_notebook_idle(self)
        return self


def notebook_idle_problem(default_s: float | None, max_s: float | None,
                          max_named: str = "the team's notebook_max_idle_timeout_s") -> str | None:
    """Why a team's default notebook idle timeout ``default_s`` may not be set under its
    maximum ``max_s`` (``max_named`` words where that maximum comes from); None: it may (or
    either is unknown)."""
    if default_s is None or max_s is None or default_s <= max_s:
        return None
    return (f"notebook_idle_timeout_s: {default_s:g} s is more than {max_named} "
            f"({max_s:g} s)")


def _check_notebook_idle(body: TeamCreate | TeamUpdate) -> None:
    problem = notebook_idle_problem(body.notebook_idle_timeout_s,
                                    body.notebook_max_idle_timeout_s)
    if problem is not None:
        raise ValueError(problem)


_SHARE_DEFAULTS: dict[str, object] = {"weight": 1.0, "cohort": None, "lend_limit_gpus": None,
                                       "default_run_limit_s": None,
                                       "notebook_idle_timeout_s": None,
                                       "notebook_max_idle_timeout_s": None,
                                       "notebook_max_lifetime_s": None}


class TeamUpdate(BaseModel):
    """What to change; a field left out stays. ``cohort``, ``lend_limit_gpus``,
    ``default_run_limit_s`` and the ``notebook_*`` fields may be sent as null to clear them
    (no cohort; lend all unused quota; the server's default run limit and notebook
    settings); null for the others means "leave it"."""

    model_config = ConfigDict(extra="forbid")
    quota_gpus: GpuCount | None = None
    borrow_limit_gpus: GpuCount | None = None
    weight: Weight | None = Field(default=None, description=_WEIGHT)
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN, description=_COHORT)
    lend_limit_gpus: GpuCount | None = Field(default=None, description=_LEND)
    default_run_limit_s: TimeLimit | None = Field(default=None, description=_RUN)
    notebook_idle_timeout_s: IdleTimeout | None = Field(default=None, description=_NB_IDLE)
    notebook_max_idle_timeout_s: IdleTimeout | None = Field(default=None,
                                                            description=_NB_MAX_IDLE)
    notebook_max_lifetime_s: TimeLimit | None = Field(default=None, description=_NB_LIFETIME)

    @model_validator(mode="after")
    def _idle_under_its_max(self) -> TeamUpdate:
        _check_notebook_idle(self)
        return self


class TeamView(BaseModel):
    name: str
    quota_gpus: float
    borrow_limit_gpus: float
    weight: float = Field(default=1.0, description=_WEIGHT)
    cohort: str | None = Field(default=None, description=_COHORT)
    lend_limit_gpus: float | None = Field(default=None, description=_LEND)
    default_run_limit_s: float | None = Field(default=None, description=_RUN)
    notebook_idle_timeout_s: float | None = Field(default=None, description=_NB_IDLE)
    notebook_max_idle_timeout_s: float | None = Field(default=None, description=_NB_MAX_IDLE)
    notebook_max_lifetime_s: float | None = Field(default=None, description=_NB_LIFETIME)
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


TokenScope = Literal["all", "metrics"]
"""What a token may do: ``all`` (its user's rights) or ``metrics`` (``GET /metrics`` only)."""


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(pattern=NAME_PATTERN)
    expires_in_s: Lifetime | None = Field(
        default=None,
        description="Seconds until the token stops working; null: it never expires.",
    )
    scope: TokenScope = Field(
        default="all", description="all: what its user may do; metrics: GET /metrics only "
        "(a scraper's token; the user need not be an admin).")


class TokenView(BaseModel):
    """A new token: the only answer that ever carries its plaintext."""

    id: int = 0
    user: str
    token: str = Field(description="Shown once; the server keeps only a hash.")
    expires_at: datetime | None = None
    scope: TokenScope = "all"


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
    scope: TokenScope = "all"


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
