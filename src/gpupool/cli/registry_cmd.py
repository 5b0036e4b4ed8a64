"""``gpupool registry login|ls|logout``: the logins your team's jobs pull their images with
(``--image`` from a registry that wants one). Each is a team secret named
``registry.<host>`` (schemas/registry.py), encrypted on the server and never shown again; the
server hands it to podman only when one of your team's jobs starts."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from gpupool.cli.client_opts import Json, Token, Url, connect, fail, handled, out, print_json

app = typer.Typer(help="Registry logins for your team's container images.",
                  no_args_is_help=True)


@app.command()
def login(
    registry: Annotated[str, typer.Argument(help="The registry: host or host:port.")],
    username: Annotated[str, typer.Option("--username", "-u", help="User name.")],
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from stdin (else: asked for).")] = False,
    url: Url = None, token: Token = None,
) -> None:
    """Store your team's login for REGISTRY (the password never on the command line)."""
    from pydantic import ValidationError

    from gpupool.schemas.registry import RegistryLogin, secret_name

    password = (sys.stdin.readline().rstrip("\n") if password_stdin
                else getpass.getpass(f"password for {username} at {registry}: "))
    try:
        name = secret_name(registry)
        value = RegistryLogin(registry=registry, username=username, password=password)
    except (ValueError, ValidationError) as exc:
        raise fail(f"registry login: {exc}") from None
    with connect(url, token) as gp, handled():
        view = gp.pipelines.set_secret(name, value.model_dump_json())
    out.print(f"login for {registry} stored for team {view.team}", markup=False)


@app.command(name="ls")
def ls(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """The registries your team has a login for (never the passwords)."""
    from gpupool.schemas.registry import PREFIX

    with connect(url, token) as gp, handled():
        found = [s for s in gp.pipelines.secrets() if s.name.startswith(PREFIX)]
    if json_out:
        print_json(found)
        return
    if not found:
        out.print("no registry logins (gpupool registry login HOST -u USER)", markup=False)
    for s in found:
        out.print(f"{s.name.removeprefix(PREFIX)}  updated {s.updated_at:%Y-%m-%d %H:%M:%S}",
                  markup=False)


@app.command()
def logout(
    registry: Annotated[str, typer.Argument(help="The registry: host or host:port.")],
    url: Url = None, token: Token = None,
) -> None:
    """Forget your team's login for REGISTRY."""
    from gpupool.schemas.registry import secret_name

    try:
        name = secret_name(registry)
    except ValueError as exc:
        raise fail(f"registry logout: {exc}") from None
    with connect(url, token) as gp, handled():
        gp.pipelines.delete_secret(name)
    out.print(f"login for {registry} removed", markup=False)
