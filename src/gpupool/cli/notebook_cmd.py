"""``gpupool notebook create | ls | open | suspend | resume | delete``: notebooks (JupyterLab
on a GPU share, started by the server as you, reached through its gateway, suspended when
idle) through the SDK. Shared options, errors and exit codes as ``client_opts`` says, and:
a notebook that is not there (unknown name or id), that ended, or that is suspended when it
should answer exits 1 with a line saying what to do.

``find`` and ``await_ready`` are also used by ``gpupool shell`` and ``gpupool submit``.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from gpupool.cli import notebook_render as render
from gpupool.cli.admin_render import parse_seconds
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
)
from gpupool.cli.jobs_cmd import option_errors, parse_env
from gpupool.schemas.jobs import JobSpec, JobView, Phase
from gpupool.sdk import ApiError, NotebookNotReady
from gpupool.sdk import notebooks as nb

if TYPE_CHECKING:
    from gpupool.sdk import Client

app = typer.Typer(
    help="Notebooks: JupyterLab on a GPU share, reached through the gateway, suspended when "
         "idle.",
    no_args_is_help=True)

EXIT_NOTEBOOK = 1
"""Exit code when the notebook is not there or not in a state to do what was asked."""
POLL_S = 0.5
"""Seconds between two looks at a notebook that is being waited on."""
Ref = Annotated[str, typer.Argument(metavar="NAME", help="The notebook's name, or its id.")]
Wait = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="Wait until it answers, then print its URL.")]


def find(client: Client, ref: str) -> JobView:
    """The notebook ``ref`` names (a name: the newest notebook of that name); exit 1 saying
    so when there is none."""
    try:
        return client.notebook(ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise fail(f"{exc.message} (gpupool notebook ls lists yours)",
                   EXIT_NOTEBOOK) from None


def await_ready(client: Client, view: JobView) -> JobView:
    """``view`` once it answers (its ``url`` set), saying meanwhile on stderr what it waits
    for (a spinner on a terminal, else one line per change). Exit 1 with the reason when it
    cannot get there (it ended, or was suspended); 130 on Ctrl-C (the notebook goes on)."""
    status = err.status("", spinner="dots") if err.is_terminal else nullcontext()
    said = ""
    try:
        with status as spinner:
            while True:
                try:
                    if nb.ready(view):
                        return view
                except NotebookNotReady as exc:
                    raise fail(_hint(exc.message, view), EXIT_NOTEBOOK) from None
                line = render.progress_line(view)
                if spinner is not None:
                    spinner.update(line)
                elif line != said:
                    err.print(line, markup=False, soft_wrap=True)
                said = line
                time.sleep(POLL_S)
                view = client.job(view.id)
    except KeyboardInterrupt:
        err.print(f"stopped waiting; notebook {view.name} goes on (gpupool notebook open "
                  f"{view.name} waits again)", markup=False)
        raise typer.Exit(code=130) from None


def _hint(message: str, view: JobView) -> str:
    if view.phase == Phase.SUSPENDED:
        return (f"notebook {view.name} is suspended: resume it with `gpupool notebook resume "
                f"{view.name}` (or open it with --resume)")
    if view.phase.final:
        return f"{message} (gpupool notebook create makes a new one)"
    return message


@app.command()
def create(
    gpus: Annotated[str | None, typer.Option(
        metavar="N", help="A share of one GPU (0.25), or whole GPUs (1, 2).")] = None,
    gpu_memory: Annotated[str | None, typer.Option(
        metavar="SIZE", help="GPU memory, e.g. 10GiB (alone: a share of one GPU).")] = None,
    gpu_model: Annotated[str | None, typer.Option(
        metavar="MODEL", help="Only this GPU model, e.g. A100.")] = None,
    cpu: Annotated[str | None, typer.Option(metavar="CORES", help="CPU cores to reserve.")
                   ] = None,
    memory: Annotated[str | None, typer.Option(
        metavar="SIZE", help="Memory to reserve, e.g. 16GiB.")] = None,
    name: Annotated[str | None, typer.Option(
        metavar="NAME", help="Its name (default: from the server); unique among your team's "
                             "live notebooks.")] = None,
    idle_timeout: Annotated[str | None, typer.Option(
        metavar="DURATION", help="Suspend it after this long without activity: seconds, or "
                                 "with a unit (20s, 30m, 2h). Default: your team's, else "
                                 "the server's.")] = None,
    queue: Annotated[str | None, typer.Option(
        metavar="QUEUE", help="Queue (default: your team's).")] = None,
    priority: Annotated[str | None, typer.Option(
        metavar="P", help="-1000..1000; higher first.")] = None,
    env: Annotated[list[str] | None, typer.Option(
        "--env", "-e", metavar="NAME=VALUE", help="NAME=VALUE for JupyterLab and its kernels "
                                                   "(repeat).")] = None,
    wait: Wait = True,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a notebook: JupyterLab on a GPU share, started by the server as you.

    It waits in the queue as a job does, then starts; with --wait (the default) this prints
    its URL once JupyterLab answers, else its id at once.

    Example: gpupool notebook create --name ada-nb --gpus 0.25 --idle-timeout 30m
    """
    spec = _spec(gpus=gpus, gpu_memory=gpu_memory, gpu_model=gpu_model, cpu=cpu,
                 memory=memory, name=name, queue=queue, priority=priority,
                 env=parse_env(env or []), idle_timeout=idle_timeout)
    with connect(url, token) as client, handled():
        view = client.submit(spec)
        if not wait:
            if json_out:
                print_json(view)
            else:
                typer.echo(view.id)
                err.print(f"notebook {view.name} is {view.phase.value}; `gpupool notebook "
                          f"open {view.name}` prints its URL once it answers", markup=False)
            return
        view = await_ready(client, view)
    if json_out:
        print_json(view)
    else:
        typer.echo(view.url)


def _spec(idle_timeout: str | None, **given: Any) -> JobSpec:
    """The notebook's JobSpec from the options given (strings, as typed); exit 2 naming
    the option when one is wrong."""
    fields: dict[str, Any] = {"kind": nb.NOTEBOOK}
    fields.update({k: v for k, v in given.items() if v is not None and v != {}})
    if idle_timeout is not None:
        try:
            fields["idle_timeout_s"] = parse_seconds(idle_timeout)
        except ValueError as exc:
            raise fail(f"--idle-timeout: {exc}") from None
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as exc:
        raise fail(option_errors(exc)) from None


@app.command(name="ls")
@app.command(name="list", hidden=True)
def ls(
    all_phases: Annotated[bool, typer.Option(
        "--all", "-a", help="Also deleted and ended ones (default: the live ones: pending, "
                            "starting, running, suspended).")] = False,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List your notebooks, newest first: name, id, phase, GPUs, idle for, URL."""
    with connect(url, token) as client, handled():
        found = client.notebooks(None if all_phases else list(render.LIVE))
    if json_out:
        print_json(found)
    elif found:
        out.print(render.notebooks_table(found))
    else:
        out.print("no notebooks" + ("" if all_phases else " (gpupool notebook create makes "
                                    "one; --all shows deleted ones)"), style="dim")


@app.command(name="open")
def open_(
    ref: Ref,
    browser: Annotated[bool, typer.Option(
        "--browser", help="Open it in your web browser, signed in (a one-time address, "
                          "valid about a minute; printed too).")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Resume it first if it is suspended.")] = False,
    wait: Wait = True,
    url: Url = None,
    token: Token = None,
) -> None:
    """Print a notebook's URL once it answers (a script sends its token to it in an
    Authorization: Bearer header), or open it in your browser.

    A suspended notebook is not resumed unless --resume is given.
    """
    with connect(url, token) as client, handled():
        view = ready_view(client, ref, wait=wait, resume=resume)
        if not browser:
            typer.echo(view.url)
            return
        sign_in = client.open_url(view.id)
    import webbrowser

    opened = webbrowser.open(sign_in)
    typer.echo(sign_in)
    note = ("opened in your browser" if opened else "no browser could be started: open this "
            "address in one") + " (it signs you in once, within about a minute)"
    err.print(note, markup=False)


def ready_view(client: Client, ref: str, wait: bool = True, resume: bool = False) -> JobView:
    """The notebook ``ref`` names once it answers: resumed first when suspended and
    ``resume``, waited for when ``wait``; else exit 1 saying why it does not answer."""
    view = find(client, ref)
    if view.phase == Phase.SUSPENDED and resume:
        view = client.resume(view.id)
        err.print(f"resuming notebook {view.name}", markup=False)
    try:
        answers = nb.ready(view)
    except NotebookNotReady as exc:
        raise fail(_hint(exc.message, view), EXIT_NOTEBOOK) from None
    if answers:
        return view
    if not wait:
        raise fail(f"notebook {view.name} does not answer yet ({render.progress_line(view)})",
                   EXIT_NOTEBOOK)
    return await_ready(client, view)


@app.command()
def suspend(ref: Ref, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Suspend a notebook now: its processes stop (kernels lose their state), its GPU share
    is freed, its files are kept."""
    with connect(url, token) as client, handled():
        view = client.suspend(find(client, ref).id)
    if json_out:
        print_json(view)
    else:
        out.print(f"notebook {view.name} {view.phase.value}: its files are kept; `gpupool "
                  f"notebook resume {view.name}` starts it again", markup=False)


@app.command()
def resume(
    ref: Ref,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait until it answers, then print its URL.")] = False,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Resume a suspended notebook: it is queued again, then starts with its files as they
    were (kernels start afresh)."""
    with connect(url, token) as client, handled():
        view = client.resume(find(client, ref).id)
        if wait:
            view = await_ready(client, view)
    if json_out:
        print_json(view)
    elif wait:
        typer.echo(view.url)
    else:
        out.print(f"notebook {view.name} {view.phase.value}; `gpupool notebook open "
                  f"{view.name}` prints its URL once it answers", markup=False)


@app.command()
def delete(
    ref: Ref,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Delete a notebook: stop it and remove its files (its directory on the server)."""
    with connect(url, token) as client, handled():
        view = find(client, ref)
        if not yes:
            if not sys.stdin.isatty():
                raise fail(f"deleting notebook {view.name} removes its files: add --yes to "
                           "confirm (no terminal to ask on)")
            if not typer.confirm(f"Delete notebook {view.name} ({view.id}) and its files?",
                                 err=True):
                raise typer.Exit(code=EXIT_NOTEBOOK)
        view = client.cancel(view.id)
    if json_out:
        print_json(view)
    else:
        out.print(f"notebook {view.name} deleted" if view.phase.final else
                  f"notebook {view.name}: delete requested (it was {view.phase.value})",
                  markup=False)
