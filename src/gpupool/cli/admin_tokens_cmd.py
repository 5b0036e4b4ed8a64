"""``gpupool admin token create|list|revoke`` and ``gpupool admin audit``: API tokens with
an optional expiry, their listing (never the token itself) and revocation, and the audit
log of admin actions and refused sign-ins. Admin only on the server side."""

from __future__ import annotations

from typing import Annotated

import typer

from gpupool.cli import admin_render
from gpupool.cli import jobs_render as render
from gpupool.cli.client_opts import (
    Json,
    Token,
    Url,
    connect,
    cut,
    err,
    fail,
    fetch_limit,
    handled,
    limit_option,
    out,
    print_json,
    say_more,
)

token_app = typer.Typer(
    help="API tokens: shown once, optionally expiring, revocable at once.", no_args_is_help=True
)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="Whose token.")],
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            metavar="DURATION",
            help=f"The token stops working after this long: {admin_render.DURATION_HELP}. "
            "Default: never.",
        ),
    ] = None,
    scope: Annotated[
        str,
        typer.Option("--scope", metavar="all|metrics",
                     help="all: what the user may do; metrics: GET /metrics only (a "
                     "Prometheus scraper's token; the user need not be an admin)."),
    ] = "all",
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create an API token for a user and print it (once: the server keeps only a hash)."""
    if scope not in ("all", "metrics"):
        raise fail(f"--scope: {scope!r} is not a scope: use all or metrics")
    expires_in_s = None
    if expires is not None:
        try:
            expires_in_s = admin_render.parse_duration(expires)
        except ValueError as exc:
            raise fail(f"--expires: {exc}") from None
    with connect(url, token) as client, handled():
        created = client.create_token(user, expires_in_s, scope)
    if json_out:
        print_json(created)
        return
    until = (f", expires {render.local_time(created.expires_at)}"
             if created.expires_at is not None else "")
    scoped = ", for GET /metrics only" if created.scope == "metrics" else ""
    note = (f"token {created.id} for {created.user}{until}{scoped} (shown once; give it to "
            "them as GPUPOOL_TOKEN):")
    err.print(note, markup=False, soft_wrap=True)
    typer.echo(created.token)


@token_app.command("list")
@token_app.command("ls", hidden=True)
def token_list(
    user: Annotated[
        str | None, typer.Option("--user", metavar="NAME", help="Only this user's tokens.")
    ] = None,
    include_all: Annotated[
        bool, typer.Option("--all", help="Also revoked and expired tokens (with a STATE).")
    ] = False,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List live tokens: id, user, created, expires, last used.

    LAST USED is kept to about a minute. The tokens themselves are never shown: the server
    keeps only their hashes."""
    with connect(url, token) as client, handled():
        found = client.tokens(user, include_all)
    if json_out:
        print_json(found)
    else:
        table = admin_render.tokens_table(found, with_state=include_all)
        render.print_table(out, table, "no tokens")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[
        int | None, typer.Argument(metavar="TOKEN_ID", help="The token's id (token list).")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", metavar="NAME", help="Revoke all of NAME's tokens.")
    ] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Revoke one token (TOKEN_ID) or all of a user's (--user NAME).

    A revoked token is refused from the very next request on; it cannot be restored
    (create a new one)."""
    if (token_id is None) == (user is None):
        raise fail("give either a TOKEN_ID or --user NAME (see: gpupool admin token list)")
    with connect(url, token) as client, handled():
        if token_id is not None:
            done = client.revoke_token(token_id)
        else:
            assert user is not None
            done = client.revoke_user_tokens(user)
    if json_out:
        print_json(done)
    elif done.revoked:
        typer.echo(f"revoked token(s): {', '.join(str(i) for i in done.revoked)}")
    else:
        typer.echo(f"user {user} had no token to revoke")


def audit(
    limit: Annotated[int, limit_option(50, "events")] = 50,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Show the audit log: admin actions and refused sign-ins, newest first.

    Admin actions on teams, users and tokens, and refused sign-ins (missing, invalid,
    expired or revoked token, disabled or deleted user), with who, on what and from which
    address. Refusals are coalesced: one row per address and reason per 10 s, the next row
    counting those left out."""
    with connect(url, token) as client, handled():
        events, more = cut(client.audit(fetch_limit(limit)), limit)
    if json_out:
        print_json(events)
    else:
        render.print_table(out, admin_render.audit_table(events), "no audit events")
    if more:
        say_more(limit, "events")
