"""The requests of the admin endpoints that came with tenant isolation (user Unix accounts,
disabling and deleting users and teams, token expiry, listing and revocation, the audit
log), shared by the sync and async clients. No I/O here."""

from __future__ import annotations

from urllib.parse import quote

from gpupool.schemas.admin import (
    TeamView,
    TokenCreate,
    TokenInfo,
    TokensRevoked,
    TokenView,
    UserCreate,
    UserDeleted,
    UserView,
)
from gpupool.sdk._wire import API, Call, _many, _one


def _name(name: str) -> str:
    return quote(name, safe="")


def create_user(name: str, team: str, admin: bool, unix_user: str | None) -> Call[UserView]:
    body = UserCreate(name=name, team=team, admin=admin, unix_user=unix_user)
    payload = body.model_dump(mode="json", exclude_none=True)
    return Call("POST", f"{API}/users", _one(UserView), body=payload)


def disable_user(name: str) -> Call[UserView]:
    return Call("POST", f"{API}/users/{_name(name)}/disable", _one(UserView))


def enable_user(name: str) -> Call[UserView]:
    return Call("POST", f"{API}/users/{_name(name)}/enable", _one(UserView))


def delete_user(name: str) -> Call[UserDeleted]:
    return Call("DELETE", f"{API}/users/{_name(name)}", _one(UserDeleted))


def delete_team(name: str) -> Call[TeamView]:
    return Call("DELETE", f"{API}/teams/{_name(name)}", _one(TeamView))


def create_token(user: str, expires_in_s: float | None, scope: str = "all") -> Call[TokenView]:
    body = TokenCreate.model_validate({"user": user, "expires_in_s": expires_in_s,
                                       "scope": scope})
    # defaults left out: a server from before scopes takes the body of a plain token
    payload = body.model_dump(mode="json", exclude_defaults=True)
    return Call("POST", f"{API}/tokens", _one(TokenView), body=payload)


def tokens(user: str | None, include_all: bool) -> Call[list[TokenInfo]]:
    params: dict[str, str] = {}
    if user is not None:
        params["user"] = user
    if include_all:
        params["all"] = "true"
    return Call("GET", f"{API}/tokens", _many(TokenInfo), params=params)


def revoke_token(token_id: int) -> Call[TokensRevoked]:
    return Call("POST", f"{API}/tokens/{int(token_id)}/revoke", _one(TokensRevoked))


def revoke_user_tokens(user: str) -> Call[TokensRevoked]:
    return Call("POST", f"{API}/users/{_name(user)}/tokens/revoke", _one(TokensRevoked))
