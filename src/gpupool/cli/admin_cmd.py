"""``gpupool admin team|user|token|audit ...``: teams with quotas, users and their Unix
accounts, API tokens, and the audit log (admin only on the server side: a non-admin token
gets a one-line 403). Tokens and the audit log are in ``admin_tokens_cmd``."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from gpupool.cli import admin_render
from gpupool.cli import jobs_render as render
from gpupool.cli.admin_render import parse_seconds
from gpupool.cli.admin_tokens_cmd import audit, token_app
from gpupool.cli.client_opts import Json, Token, Url, connect, err, fail, handled, out, print_json
from gpupool.schemas.admin import TeamCreate, TeamUpdate, TeamView

M = TypeVar("M", bound=BaseModel)

app = typer.Typer(
    help="Manage teams, users, tokens and read the audit log (needs an admin token).",
    no_args_is_help=True,
)
team_app = typer.Typer(
    help="Teams: each has a queue, a GPU quota, a borrow limit and a fair-share weight, and "
    "may lend unused quota to the teams of its cohort.", no_args_is_help=True
)
user_app = typer.Typer(
    help="Users: each belongs to one team and (on a root server) runs as one Unix account.",
    no_args_is_help=True,
)
app.add_typer(team_app, name="team")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.command("audit")(audit)

Name = Annotated[str, typer.Argument(help="Team name.")]


Weight = Annotated[float | None, typer.Option(
    metavar="W", help="Fair share: the team's share of the pool is in proportion to its weight "
    "(more than 0, at most 1000; default 1).")]
Cohort = Annotated[str | None, typer.Option(
    metavar="COHORT", help="Teams of one cohort lend each other their unused quota (a name "
    'like a team\'s; "" takes the team out of its cohort).')]
LendLimit = Annotated[str | None, typer.Option(
    "--lend-limit", metavar="GPUS", help="The most GPUs of its unused quota the team lends to "
    "its cohort, or 'all' (the default: no limit).")]
RunLimit = Annotated[str | None, typer.Option(
    "--default-run-limit", metavar="DURATION", help="How long a running job of the team's "
    "queue without a time limit is assumed to run, to estimate when a reservation starts "
    "(e.g. 30m, 4h), or 'default': the server's --default-run-limit (1h unless set).")]
NotebookIdle = Annotated[str | None, typer.Option(
    "--notebook-idle-timeout", metavar="DURATION", help="How long a notebook of the team "
    "without its own idle timeout may be idle before it is suspended (e.g. 20m, 2h; at least "
    "5s and at most the team's maximum), or 'default': the server's --notebook-idle-timeout.")]
NotebookMaxIdle = Annotated[str | None, typer.Option(
    "--notebook-max-idle-timeout", metavar="DURATION", help="The longest idle timeout a "
    "notebook of the team may ask for (e.g. 8h; at least 5s), or 'default': the server's "
    "--notebook-max-idle-timeout.")]
NotebookLifetime = Annotated[str | None, typer.Option(
    "--notebook-max-lifetime", metavar="DURATION", help="How long a notebook of the team may "
    "run before it is suspended (e.g. 3d), or 'default': the server's --notebook-max-lifetime.")]
_NOTEBOOK_OPTIONS = {"notebook_idle_timeout_s": "--notebook-idle-timeout",
                     "notebook_max_idle_timeout_s": "--notebook-max-idle-timeout",
                     "notebook_max_lifetime_s": "--notebook-max-lifetime"}
_OPTION = {"name": "NAME", "quota_gpus": "--quota-gpus", "borrow_limit_gpus":
           "--borrow-limit-gpus", "weight": "--weight", "cohort": "--cohort",
           "lend_limit_gpus": "--lend-limit", "default_run_limit_s": "--default-run-limit",
           **_NOTEBOOK_OPTIONS}


def _share_fields(weight: float | None, cohort: str | None, lend_limit: str | None,
                  run_limit: str | None) -> dict[str, Any]:
    """The fair-share and run-limit fields the options give (those not given are left out);
    exit 2 naming the option when --lend-limit is neither a number nor 'all', or
    --default-run-limit neither a duration nor 'default'."""
    fields: dict[str, Any] = {}
    if weight is not None:
        fields["weight"] = weight
    if cohort is not None:
        fields["cohort"] = cohort or None
    if lend_limit is not None:
        if lend_limit.strip().lower() == "all":
            fields["lend_limit_gpus"] = None
        else:
            try:
                fields["lend_limit_gpus"] = float(lend_limit)
            except ValueError:
                raise fail(f"--lend-limit {lend_limit!r}: give a number of GPUs (e.g. 2) or "
                           "'all'") from None
    if run_limit is not None:
        if run_limit.strip().lower() == "default":
            fields["default_run_limit_s"] = None
        else:
            try:
                fields["default_run_limit_s"] = parse_seconds(run_limit)
            except ValueError as exc:
                raise fail(f"--default-run-limit: {exc}, or 'default'") from None
    return fields


def _notebook_fields(idle: str | None, max_idle: str | None, lifetime: str | None
                     ) -> dict[str, Any]:
    """The team's notebook settings the options give (those not given are left out; 'default'
    is None: the server's); exit 2 naming the option when a value is neither a duration nor
    'default'."""
    fields: dict[str, Any] = {}
    for field, value in zip(_NOTEBOOK_OPTIONS, (idle, max_idle, lifetime), strict=True):
        if value is None:
            continue
        if value.strip().lower() == "default":
            fields[field] = None
            continue
        try:
            fields[field] = parse_seconds(value)
        except ValueError as exc:
            raise fail(f"{_NOTEBOOK_OPTIONS[field]}: {exc}, or 'default'") from None
    return fields


def _checked(model: type[M], fields: dict[str, Any]) -> M:
    """``model`` of ``fields``, or exit 2 naming the options that break the contract."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            msg = str(error["msg"]).removeprefix("Value error, ")
            where = _OPTION.get(loc[0], loc[0]) if loc else ""
            problems.append(f"{where}: {msg[:1].lower() + msg[1:]}" if where else msg)
        raise fail("; ".join(problems)) from None


def _print_team(team: TeamView, json_out: bool) -> None:
    if json_out:
        print_json(team)
    else:
        typer.echo(admin_render.team_line(team))
    if team.warning:
        err.print(f"warning: {team.warning}", style="yellow", soft_wrap=True, markup=False)


@team_app.command("create")
def team_create(
    name: Name,
    quota_gpus: Annotated[float, typer.Option(help="GPUs guaranteed to the team.")] = 0,
    borrow_limit_gpus: Annotated[
        float, typer.Option(help="GPUs it may borrow beyond its quota when others are idle.")
    ] = 0,
    weight: Weight = None,
    cohort: Cohort = None,
    lend_limit: LendLimit = None,
    default_run_limit: RunLimit = None,
    notebook_idle_timeout: NotebookIdle = None,
    notebook_max_idle_timeout: NotebookMaxIdle = None,
    notebook_max_lifetime: NotebookLifetime = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a team (and its queue)."""
    fields = {"name": name, "quota_gpus": quota_gpus, "borrow_limit_gpus": borrow_limit_gpus,
              **_share_fields(weight, cohort, lend_limit, default_run_limit),
              **_notebook_fields(notebook_idle_timeout, notebook_max_idle_timeout,
                                 notebook_max_lifetime)}
    body = _checked(TeamCreate, fields)
    with connect(url, token) as client, handled():
        team = client.create_team(**body.model_dump(exclude_unset=True))
    _print_team(team, json_out)


@team_app.command("set")
@team_app.command("update", hidden=True)
def team_set(
    name: Name,
    quota_gpus: Annotated[float | None, typer.Option(help="New guaranteed GPUs.")] = None,
    borrow_limit_gpus: Annotated[float | None, typer.Option(help="New borrow limit.")] = None,
    weight: Weight = None,
    cohort: Cohort = None,
    lend_limit: LendLimit = None,
    default_run_limit: RunLimit = None,
    notebook_idle_timeout: NotebookIdle = None,
    notebook_max_idle_timeout: NotebookMaxIdle = None,
    notebook_max_lifetime: NotebookLifetime = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Change a team's quota, borrow limit, weight, cohort, lending limit, default run
    limit or notebook settings (what is not given stays)."""
    fields: dict[str, Any] = {k: v for k, v in (("quota_gpus", quota_gpus),
                                                ("borrow_limit_gpus", borrow_limit_gpus))
                              if v is not None}
    fields.update(_share_fields(weight, cohort, lend_limit, default_run_limit))
    fields.update(_notebook_fields(notebook_idle_timeout, notebook_max_idle_timeout,
                                   notebook_max_lifetime))
    if not fields:
        raise fail("nothing to change: give --quota-gpus, --borrow-limit-gpus, --weight, "
                   "--cohort, --lend-limit, --default-run-limit, --notebook-idle-timeout, "
                   "--notebook-max-idle-timeout and/or --notebook-max-lifetime")
    body = _checked(TeamUpdate, fields)
    with connect(url, token) as client, handled():
        team = client.update_team(name, **body.model_dump(exclude_unset=True))
    _print_team(team, json_out)


@team_app.command("list")
@team_app.command("ls", hidden=True)
def team_list(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List teams with their quotas, weights, cohorts, run limits and notebook settings
    (-: the server's)."""
    with connect(url, token) as client, handled():
        teams = client.teams()
    if json_out:
        print_json(teams)
    else:
        render.print_table(out, admin_render.teams_table(teams), "no teams")


@team_app.command("delete")
def team_delete(name: Name, url: Url = None, token: Token = None) -> None:
    """Delete a team (it must have no users and no active jobs).

    Refused for the default team and while the team has users (delete them first), active
    jobs (cancel them first) or pipeline runs and schedules. Its job history stays; the
    name can be used again."""
    with connect(url, token) as client, handled():
        team = client.delete_team(name)
    typer.echo(f"team {team.name} deleted")


UserName = Annotated[str, typer.Argument(help="User name.")]


@user_app.command("create")
def user_create(
    name: UserName,
    team: Annotated[str, typer.Option(help="The user's team.")],
    admin: Annotated[bool, typer.Option("--admin", help="May manage teams and users.")] = False,
    unix_user: Annotated[
        str | None,
        typer.Option(
            "--unix-user",
            metavar="ACCOUNT",
            help="An existing Unix account the user's workloads run as (server running as "
            "root only). Left out, a root server creates gp-NAME. Several users may share an "
            "account only when it is named for each; root only when named.",
        ),
    ] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a user in a team (then give them a token: gpupool admin token create USER)."""
    with connect(url, token) as client, handled():
        user = client.create_user(name, team, admin, unix_user)
    if json_out:
        print_json(user)
        return
    runs_as = f", runs as Unix user {user.unix_user}" if user.unix_user else ""
    typer.echo(f"user {user.name} in team {user.team}" + (" (admin)" if user.admin else "")
               + runs_as)


@user_app.command("list")
@user_app.command("ls", hidden=True)
def user_list(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List users, whether they are disabled, and their Unix account.

    Deleted users are not shown. UNIX USER is the account their workloads run as (-: the
    server's own, when it is not root)."""
    with connect(url, token) as client, handled():
        users = client.users()
    if json_out:
        print_json(users)
    else:
        render.print_table(out, admin_render.users_table(users), "no users")


@user_app.command("disable")
def user_disable(name: UserName, url: Url = None, token: Token = None) -> None:
    """Disable a user: their tokens stop working at once; their jobs keep running.

    Their tokens are refused from the very next request on. Their jobs already queued or
    running are NOT stopped: they keep running until an admin cancels them (gpupool ps
    --all-teams, then gpupool cancel JOB). Undo with `gpupool admin user enable NAME`."""
    with connect(url, token) as client, handled():
        user = client.disable_user(name)
    typer.echo(f"user {user.name} disabled (their queued and running jobs were left alone)")


@user_app.command("enable")
def user_enable(name: UserName, url: Url = None, token: Token = None) -> None:
    """Enable a disabled user (their live tokens work again)."""
    with connect(url, token) as client, handled():
        user = client.enable_user(name)
    typer.echo(f"user {user.name} enabled")


@user_app.command("delete")
def user_delete(
    name: UserName, json_out: Json = False, url: Url = None, token: Token = None
) -> None:
    """Delete a user: revoke their tokens and remove their server-made Unix account.

    Refused while they have pending, starting or running jobs (cancel them first: gpupool
    cancel JOB) or pipeline runs or schedules. Their job history stays; the name can be
    used again."""
    with connect(url, token) as client, handled():
        deleted = client.delete_user(name)
    if json_out:
        print_json(deleted)
        return
    line = f"user {deleted.name} deleted, {deleted.tokens_revoked} token(s) revoked"
    if deleted.unix_removed:
        line += f", Unix account {deleted.unix_user} removed"
    typer.echo(line)
    if deleted.note:
        err.print(f"note: {deleted.note}", markup=False, soft_wrap=True)
