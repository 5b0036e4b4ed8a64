"""Job commands: ``gpupool run | submit | ps | logs | describe | cancel | nodes | queues``
(and, through ``admin_cmd``, ``gpupool admin ...``). All of them talk to a server through the
SDK; see ``client_opts`` for the shared options, errors and exit codes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from gpupool.cli import admin_cmd, cancel_cmd, logs_cmd, ps_cmd
from gpupool.cli import jobs_render as render
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
    validation_line,
)
from gpupool.schemas.jobs import JobSpec, JobView, Kind, Phase
from gpupool.schemas.values import find_problems
from gpupool.sdk import Client

Ref = Annotated[str, typer.Argument(help="Job id, or name (the newest job of that name).")]
Wait = Annotated[
    bool, typer.Option("--wait", help="Block until the job ends; exit with its exit code.")
]
IdempotencyKey = Annotated[str | None, typer.Option(
    "--idempotency-key", metavar="KEY",
    help="Retry-safe submit: the same KEY with the same job within 24 h answers the job the "
         "first submit queued instead of queueing another (e.g. a script that retries after a "
         "dropped connection). 1-200 printable ASCII characters. Default: a fresh one.",
)]
# Options of `run` that differ from the JobSpec field they fill, for error messages.
OPTION_OF = {"command": "command", "grace_period_s": "--grace-period",
             "time_limit_s": "--time-limit", "idle_timeout_s": "--idle-timeout"}
# Durations a YAML file may write with a unit, under the short name: the short name -> the
# JobSpec field of seconds (notebooks' idle_timeout as time_limit).
DURATIONS = {"time_limit": "time_limit_s", "idle_timeout": "idle_timeout_s"}


def register(app: typer.Typer) -> None:
    """Add the job, cluster and admin commands to ``app``."""
    app.command(name="run", context_settings={"allow_interspersed_args": False})(run)
    app.command(name="submit")(submit)
    app.command(name="ps")(ps_cmd.ps)
    app.command(name="logs")(logs_cmd.logs)
    app.command(name="describe")(describe)
    app.command(name="cancel")(cancel_cmd.cancel)
    app.command(name="nodes")(nodes)
    app.command(name="queues")(queues)
    app.add_typer(admin_cmd.app, name="admin")


def run(
    command: Annotated[
        list[str] | None,
        typer.Argument(help="The program and its arguments, after the options (or after --)."),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(metavar="N", help="Whole GPUs (1, 2, ...) or a share of one GPU (0.5)."),
    ] = None,
    gpu_memory: Annotated[
        str | None,
        typer.Option(metavar="SIZE", help="GPU memory, e.g. 20GiB (alone: a share of one GPU)."),
    ] = None,
    gpu_model: Annotated[
        str | None, typer.Option(metavar="MODEL", help="Only this GPU model, e.g. A100.")
    ] = None,
    cpu: Annotated[str | None, typer.Option(metavar="CORES", help="CPU cores to reserve.")] = None,
    memory: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Memory to reserve, e.g. 16GiB.")
    ] = None,
    queue: Annotated[
        str | None, typer.Option(metavar="QUEUE", help="Queue (default: your team's).")
    ] = None,
    priority: Annotated[
        str | None, typer.Option(metavar="P", help="-1000..1000; higher first.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(metavar="NAME", help="Job name (default: from the server).")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="NAME=VALUE", help="NAME=VALUE for the job (repeat)."),
    ] = None,
    workdir: Annotated[
        str | None,
        typer.Option(metavar="DIR", help="Working directory (default: the current one)."),
    ] = None,
    code: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Ship DIR with the job: packed (what git would "
                     "track; .gitignore respected; at most --code-limit), uploaded unless "
                     "the server has it, unpacked into the job's own directory, which is "
                     "then its working directory (unless --workdir)."),
    ] = None,
    artifact: Annotated[
        list[str] | None,
        typer.Option("--artifact", metavar="PATH", help="Keep PATH (relative to the working "
                     "directory) when the job ends: gpupool artifacts JOB (repeat)."),
    ] = None,
    code_limit: Annotated[
        int, typer.Option(metavar="MIB", help="The most MiB --code may pack.", min=1),
    ] = 100,
    image: Annotated[
        str | None,
        typer.Option(metavar="IMAGE", help="Run in this container image (podman, as your own "
                     "account), e.g. docker.io/library/python:3.12; default: on the host."),
    ] = None,
    restart: Annotated[
        str | None, typer.Option(metavar="POLICY", help="never or on-failure.")
    ] = None,
    max_retries: Annotated[
        str | None, typer.Option(metavar="N", help="Retries with on-failure.")
    ] = None,
    grace_period: Annotated[
        str | None,
        typer.Option(metavar="SECONDS", help="Seconds between SIGTERM and SIGKILL on cancel."),
    ] = None,
    nodes: Annotated[
        str | None,
        typer.Option(metavar="N", help="Distributed job: N nodes, placed all or nothing."),
    ] = None,
    gpus_per_node: Annotated[
        str | None,
        typer.Option(metavar="N", help="Whole GPUs on each node (same as --gpus)."),
    ] = None,
    procs_per_node: Annotated[
        str | None,
        typer.Option(
            metavar="N",
            help="Processes per node (default 1, e.g. one torchrun per node; or one per GPU).",
        ),
    ] = None,
    time_limit: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="The most one attempt may run: seconds, or with a unit (90s, 30m, 2h, 1d); "
            "the server stops it then. Default: no limit.",
        ),
    ] = None,
    wait: Wait = False,
    idempotency_key: IdempotencyKey = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Submit a command as a job and print its id.

    Example: gpupool run --gpus 0.5 --memory 16GiB -- python train.py --lr 3e-4

    In an image: gpupool run --image docker.io/pytorch/pytorch:latest --gpus 1 -- python
    train.py (on nodes that run images: see the IMAGES column of gpupool nodes).

    Distributed: gpupool run --nodes 2 --gpus-per-node 4 -- torchrun train.py (every
    process gets MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, NODE_RANK, ... and
    torchrun's PET_* options).
    """
    if not command:
        raise fail("give the command to run, e.g. gpupool run --gpus 1 -- python train.py")
    if gpus is not None and gpus_per_node is not None:
        raise fail("give --gpus or --gpus-per-node, not both (they are the same)")
    fields: dict[str, Any] = {
        "command": command,
        "env": parse_env(env or []),
        # with --code the job runs in its copy of DIR unless a directory is named
        "workdir": os.path.abspath(workdir) if workdir else (
            None if code is not None else os.getcwd()),
    }
    given: dict[str, Any] = {
        "gpus": gpus,
        "gpu_memory": gpu_memory,
        "gpu_model": gpu_model,
        "cpu": cpu,
        "memory": memory,
        "queue": queue,
        "priority": priority,
        "name": name,
        "image": image,
        "artifacts": artifact,
        "restart": restart,
        "max_retries": max_retries,
        "grace_period_s": grace_period,
        "nodes": nodes,
        "procs_per_node": procs_per_node,
    }
    if gpus_per_node is not None:
        given["gpus"] = gpus_per_node
    if time_limit is not None:
        try:
            given["time_limit_s"] = parse_seconds(time_limit)
        except ValueError as exc:
            raise fail(f"--time-limit: {exc}") from None
    fields.update({k: v for k, v in given.items() if v is not None})
    try:
        spec = JobSpec.model_validate(fields)
    except ValidationError as exc:
        raise fail(option_errors(exc)) from None
    _submit(spec, wait, json_out, url, token, idempotency_key, code=code, code_limit=code_limit)


def submit(
    file: Annotated[Path, typer.Argument(help="YAML file with JobSpec fields.")],
    wait: Wait = False,
    idempotency_key: IdempotencyKey = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Submit the job described in a YAML file.

    Fields as in `gpupool run`, snake_case: command (a list), gpus, gpu_memory, cpu, memory, ...

    time_limit (or time_limit_s) is how long one attempt may run: seconds, or with a unit
    (90s, 30m, 2h, 1d).

    kind: notebook makes it a notebook (no command; see gpupool notebook create):
    idle_timeout (or idle_timeout_s) is how long it may sit idle before it is suspended, in
    the same units; with --wait, submit waits until it answers and prints its URL.

    Unknown fields are rejected. A relative workdir is relative to the file; none: the cwd
    (a notebook: its own directory, which the server makes).

    code: DIR (relative to the file) ships DIR with the job, as gpupool run --code does; the
    job then runs in its copy unless workdir is given. artifacts: [model/, ...] keeps those
    paths when it ends (gpupool artifacts JOB).
    """
    spec, code = load_job_file(file)
    _submit(spec, wait, json_out, url, token, idempotency_key, code=code)


def load_spec(file: Path) -> JobSpec:
    """The JobSpec in a YAML file (see :func:`load_job_file`)."""
    return load_job_file(file)[0]


def load_job_file(file: Path) -> tuple[JobSpec, Path | None]:
    """The JobSpec in a YAML file, and the folder to ship when its ``code`` names one (a
    path, relative to the file; ``sha256:…`` is an uploaded archive's digest, kept as is);
    exit 2 with one line naming the file, and the line or the field, when it cannot be
    read, parsed or validated."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise fail(f"{file}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise fail(f"{file}: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise fail(f"{file}: expected a mapping of job fields (command: [...], ...), found {kind}")
    for where, problem in find_problems(data):  # YAML .inf/.nan, NUL: refuse, name the field
        raise fail(f"{file}: {'.'.join(where)}: {problem}")
    if "gpus_per_node" in data:  # the distributed spelling of `gpus`
        if "gpus" in data:
            raise fail(f"{file}: give gpus or gpus_per_node, not both (they are the same)")
        data["gpus"] = data.pop("gpus_per_node")
    spelled: dict[str, str] = {}  # JobSpec field -> the name the file used
    for short, field in DURATIONS.items():  # seconds, or a duration such as 2h
        if short not in data:
            continue
        spelled[field] = short
        if field in data:
            raise fail(f"{file}: give {short} or {field}, not both (they are the same)")
        value = data.pop(short)
        try:
            data[field] = None if value is None else parse_seconds(value)
        except ValueError as exc:
            raise fail(f"{file}: field {short!r}: {exc}") from None
    env = data.get("env")
    if isinstance(env, dict):  # YAML reads `OMP_NUM_THREADS: 4` as a number
        data["env"] = {
            k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
            for k, v in env.items()
        }
    code: Path | None = None
    if isinstance(data.get("code"), str) and not data["code"].startswith("sha256:"):
        code = file.parent / os.path.expanduser(data.pop("code"))
    workdir = data.get("workdir")
    if workdir is None:
        # a notebook's is its own, made by the server; with code, the job's copy of it
        if data.get("kind") != "notebook" and code is None:
            data["workdir"] = os.getcwd()
    elif isinstance(workdir, str):
        data["workdir"] = os.path.abspath(os.path.join(file.parent, os.path.expanduser(workdir)))
    try:
        return JobSpec.model_validate(data), code
    except ValidationError as exc:
        line = validation_line(exc, str(file))
        for field, short in spelled.items():
            line = line.replace(f"field {field!r}", f"field {short!r}")
        raise fail(line) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    if mark is None:
        return f"not valid YAML: {' '.join(str(exc).split())}"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem} (not valid YAML)"


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``--env NAME=VALUE`` options as a mapping; exit 2 naming a malformed one."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--env {pair!r}: expected NAME=VALUE, e.g. --env OMP_NUM_THREADS=4")
        env[key] = value
    return env


def option_errors(exc: ValidationError) -> str:
    """A JobSpec's validation errors as one line naming the command-line options."""
    problems = []
    for error in exc.errors():
        msg = str(error["msg"]).removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
        loc = [str(p) for p in error["loc"]]
        if not loc:
            problems.append(msg)
            continue
        option = OPTION_OF.get(loc[0], "--" + loc[0].replace("_", "-"))
        if len(loc) > 1:  # --env NAME=...
            option += " " + ".".join(loc[1:])
        problems.append(f"{option}: {msg}")
    return "; ".join(problems)


def _upload_code(client: Client, folder: Path, limit_mib: int) -> str:
    """Pack and upload ``folder`` (if the team lacks it); say what happened on stderr."""
    from gpupool.sdk.code_pack import CodeError

    try:
        done = client.upload_code(folder, limit_mib)
    except CodeError as exc:
        raise fail(str(exc)) from None
    what = "uploaded" if done.uploaded else "already on the server, not sent again"
    err.print(f"code: {done.files} files, {done.size / 1024:,.1f} KiB packed, {what} "
              f"({done.digest[:19]}…)", soft_wrap=True, markup=False)
    return done.digest


def _submit(spec: JobSpec, wait: bool, json_out: bool, url: str | None, token: str | None,
            idempotency_key: str | None = None, code: Path | None = None,
            code_limit: int = 100) -> None:
    if idempotency_key is not None and not (
            0 < len(idempotency_key) <= 200
            and all(" " <= c <= "~" for c in idempotency_key)):
        raise fail(f"--idempotency-key {idempotency_key!r}: give 1 to 200 printable ASCII "
                   "characters, e.g. a UUID")
    with connect(url, token) as client, handled():
        if code is not None:
            spec = spec.model_copy(update={"code": _upload_code(client, code, code_limit)})
        view = client.submit(spec, idempotency_key=idempotency_key)
        if json_out and not wait:
            print_json(view)
        if not json_out:
            typer.echo(view.id)
        if not wait:
            return
        if spec.kind == Kind.NOTEBOOK:  # waits until it answers, not until it ends
            from gpupool.cli.notebook_cmd import await_ready

            ready = await_ready(client, view)
            if json_out:
                print_json(ready)
            else:
                typer.echo(ready.url)
            return
        final = _wait(client, view)
        if json_out:
            print_json(final)
        if final.phase is Phase.FAILED:  # the cause is usually at the end of its output
            logs_cmd.print_tail(client, final)
    err.print(render.final_line(final), soft_wrap=True, markup=False)
    raise typer.Exit(code=exit_code(final))


def _wait(client: Client, view: JobView) -> JobView:
    try:
        return client.wait(view.id)
    except KeyboardInterrupt:
        note = f"stopped waiting; job {view.id} goes on (stop it: gpupool cancel {view.id})"
        err.print(note, markup=False)
        raise typer.Exit(code=130) from None


def exit_code(view: JobView) -> int:
    """The exit status of a job that ended, as ``sbatch --wait`` would give it: 0 when it
    succeeded, its exit code (128+N when killed by signal N) when it failed, else 1."""
    if view.phase is Phase.SUCCEEDED:
        return 0
    code = view.exit_code
    if view.phase is Phase.FAILED and code is not None and code != 0:
        return 128 - code if code < 0 else min(code, 255)
    return 1


def describe(job: Ref, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Show one job: phase, why it waits, where it runs, what it asked for, its history."""
    with connect(url, token) as client, handled():
        view = client.job(job)
    if json_out:
        print_json(view)
    else:
        out.print(render.describe(view))


def nodes(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Nodes and their GPUs: model, memory, what is allocated and to which jobs."""
    with connect(url, token) as client, handled():
        found = client.nodes()
    if json_out:
        print_json(found)
    else:
        render.print_table(out, render.nodes_table(found), "no nodes")


def queues(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Queues: quota, borrow limit, GPUs in use and borrowed, pending and running jobs."""
    with connect(url, token) as client, handled():
        found = client.queues()
    if json_out:
        print_json(found)
    else:
        render.print_table(out, render.queues_table(found), "no queues")
