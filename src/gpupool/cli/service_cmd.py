"""``gpupool serve FILE`` and ``gpupool service ls | describe | delete | key``: inference
services (replicas of an HTTP server on GPU shares, behind the gateway at ``/svc/<name>/``,
autoscaled) through the SDK. Shared options, errors and exit codes as ``client_opts`` says;
a file that cannot be read or is not a valid service exits 2 with one line naming the file
and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from gpupool.cli import service_render as render
from gpupool.cli.client_opts import (
    Json,
    Token,
    Url,
    connect,
    err,
    fail,
    handled,
    out,
    print_json,
    validation_line,
)
from gpupool.schemas.services import ServiceSpec

app = typer.Typer(
    help="Inference services: replicas on GPU shares behind the gateway, autoscaled.",
    no_args_is_help=True)
keys = typer.Typer(help="A service's API keys (callers send one as Authorization: Bearer).",
                   no_args_is_help=True)
app.add_typer(keys, name="key")

Name = Annotated[str, typer.Argument(metavar="NAME", help="The service's name.")]
KeyName = Annotated[str, typer.Argument(metavar="KEY", help="The key's name.")]


def load(file: Path) -> ServiceSpec:
    """The ServiceSpec in a YAML file; exit 2 naming the file and the problem."""
    from gpupool.sdk.services import read_service_file

    try:
        data = read_service_file(file)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if data.get("kind", "service") != "service":
        raise fail(f"{file}: kind is {data.get('kind')!r}: gpupool serve deploys services "
                   "(kind: service); gpupool submit runs jobs and notebooks")
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as exc:
        raise fail(validation_line(exc, str(file))) from None


def serve(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The service's YAML file.")],
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until a replica is ready, then print the URL.")] = True,
    timeout: Annotated[float, typer.Option(
        help="With --wait: give up after this many seconds (exit 1).")] = 300.0,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Deploy the service described in a YAML file: create it, or update it when the name
    exists.

    A changed spec rolls out: new replicas start, traffic moves to them once they are
    ready, old ones are drained; the same spec changes nothing.

    Fields: kind: service, name, command (it must serve HTTP on 127.0.0.1:$PORT), the
    resources of a job per replica (gpus, gpu_memory, cpu, memory, env, workdir, ...),
    replicas {min, max}, scaling {target_inflight, cooldown_s}, readiness {path},
    auth (token or public), wake_timeout_s. A relative workdir is relative to the file;
    none: the current directory.
    """
    spec = load(file)
    with connect(url, token) as client, handled():
        result = client.services.deploy(spec)
        view = result.service
        if wait and view.desired_replicas > 0:
            err.print(f"service {view.name} {result.action}: waiting for a ready replica",
                      markup=False)
            try:
                view = client.services.wait_ready(view.name, timeout=timeout)
            except TimeoutError as exc:
                raise fail(f"{exc} (gpupool service describe {view.name} says why)",
                           code=1) from None
    if json_out:
        print_json(view)
        return
    err.print(f"service {view.name} {result.action} (generation {view.generation})",
              markup=False)
    typer.echo(view.url)


@app.command(name="ls")
@app.command(name="list", hidden=True)
def ls(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List the services of your team (admins: all): name, replicas ready and desired, GPU
    per replica, auth, requests in flight, URL."""
    with connect(url, token) as client, handled():
        found = client.services.list()
    if json_out:
        print_json(found)
    elif found:
        out.print(render.services_table(found))
    else:
        out.print("no services (gpupool serve FILE.yaml deploys one)", style="dim")


@app.command()
def describe(name: Name, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Show one service: URL, spec, scaling, and each replica's node, GPU share and state."""
    with connect(url, token) as client, handled():
        view = client.services.get(name)
    if json_out:
        print_json(view)
    else:
        out.print(render.describe(view))


@app.command()
def delete(name: Name, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Delete a service: its URL stops answering, its replicas stop, its name is free."""
    with connect(url, token) as client, handled():
        view = client.services.delete(name)
    if json_out:
        print_json(view)
    else:
        err.print(f"service {view.name} deleted; its {len(view.replicas)} replica(s) stop",
                  markup=False)


@keys.command(name="create")
def key_create(name: Name, key: KeyName, json_out: Json = False, url: Url = None,
               token: Token = None) -> None:
    """Make an API key for the service and print it (shown this once)."""
    with connect(url, token) as client, handled():
        made = client.services.create_key(name, key)
    if json_out:
        print_json(made)
        return
    typer.echo(made.key)
    err.print(f"key {made.name} of service {name}: keep it, it is not shown again",
              markup=False)


@keys.command(name="ls")
def key_ls(name: Name, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List the service's keys (names and dates; never the keys)."""
    with connect(url, token) as client, handled():
        found = client.services.keys(name)
    if json_out:
        print_json(found)
    elif found:
        out.print(render.keys_table(found))
    else:
        out.print(f"no keys (gpupool service key create {name} KEY makes one)", style="dim")


@keys.command(name="revoke")
def key_revoke(name: Name, key: KeyName, json_out: Json = False, url: Url = None,
               token: Token = None) -> None:
    """Revoke a key: the gateway refuses it within a second."""
    with connect(url, token) as client, handled():
        done = client.services.revoke_key(name, key)
    if json_out:
        print_json(done)
    else:
        err.print(f"key {done.name} of service {name} revoked", markup=False)
