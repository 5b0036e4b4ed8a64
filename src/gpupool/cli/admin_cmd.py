"""``gpupool admin team|user|token ...``: teams with quotas, users, API tokens (admin only on
the server side: a non-admin token gets a one-line 403)."""

from __future__ import annotations

from typing import Annotated

import typer

from gpupool.cli import jobs_render as render
from gpupool.cli.client_opts import Json, Token, Url, connect, err, fail, handled, out, print_json

app = typer.Typer(
    help="Manage teams, users and tokens (needs an admin token).", no_args_is_help=True
)
team_app = typer.Typer(
    help="Teams: each has a queue, a GPU quota and a borrow limit.", no_args_is_help=True
)
user_app = typer.Typer(help="Users: each belongs to one team.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (shown once).", no_args_is_help=True)
app.add_typer(team_app, name="team")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

Name = Annotated[str, typer.Argument(help="Team name.")]


@team_app.command("create")
def team_create(
    name: Name,
    quota_gpus: Annotated[float, typer.Option(help="GPUs guaranteed to the team.")] = 0,
    borrow_limit_gpus: Annotated[
        float, typer.Option(help="GPUs it may borrow beyond its quota when others are idle.")
    ] = 0,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a team (and its queue)."""
    with connect(url, token) as client, handled():
        team = client.create_team(name, quota_gpus, borrow_limit_gpus)
    if json_out:
        print_json(team)
    else:
        typer.echo(
            f"team {team.name}: quota {team.quota_gpus:g} GPUs, "
            f"borrow limit {team.borrow_limit_gpus:g} GPUs"
        )


@team_app.command("set")
def team_set(
    name: Name,
    quota_gpus: Annotated[float | None, typer.Option(help="New guaranteed GPUs.")] = None,
    borrow_limit_gpus: Annotated[float | None, typer.Option(help="New borrow limit.")] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Change a team's quota or borrow limit (what is not given stays)."""
    if quota_gpus is None and borrow_limit_gpus is None:
        raise fail("nothing to change: give --quota-gpus and/or --borrow-limit-gpus")
    with connect(url, token) as client, handled():
        team = client.update_team(name, quota_gpus, borrow_limit_gpus)
    if json_out:
        print_json(team)
    else:
        typer.echo(
            f"team {team.name}: quota {team.quota_gpus:g} GPUs, "
            f"borrow limit {team.borrow_limit_gpus:g} GPUs"
        )


@team_app.command("list")
def team_list(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List teams with their quotas."""
    with connect(url, token) as client, handled():
        teams = client.teams()
    if json_out:
        print_json(teams)
    else:
        render.print_table(out, render.teams_table(teams), "no teams")


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="User name.")],
    team: Annotated[str, typer.Option(help="The user's team.")],
    admin: Annotated[bool, typer.Option("--admin", help="May manage teams and users.")] = False,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a user in a team (then give them a token: gpupool admin token create USER)."""
    with connect(url, token) as client, handled():
        user = client.create_user(name, team, admin)
    if json_out:
        print_json(user)
    else:
        typer.echo(f"user {user.name} in team {user.team}" + (" (admin)" if user.admin else ""))


@user_app.command("list")
def user_list(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List users."""
    with connect(url, token) as client, handled():
        users = client.users()
    if json_out:
        print_json(users)
    else:
        render.print_table(out, render.users_table(users), "no users")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="Whose token.")],
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create an API token for a user and print it (once: the server keeps only a hash)."""
    with connect(url, token) as client, handled():
        created = client.create_token(user)
    if json_out:
        print_json(created)
        return
    note = f"token for {created.user} (shown once; give it to them as GPUPOOL_TOKEN):"
    err.print(note, markup=False)
    typer.echo(created.token)
