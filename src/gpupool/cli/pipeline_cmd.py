"""``gpupool pipeline run | ls | describe | logs | cancel | retry | priority | validate |
schedule | schedules | secret``: pipelines through the SDK (see client_opts for the shared
options, errors and exit codes; ``run --wait`` exits 0 only if the run succeeded, else 1)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from gpupool.cli.client_opts import (
    Json,
    Token,
    Url,
    connect,
    cut,
    fail,
    fetch_limit,
    handled,
    limit_option,
    out,
    print_json,
    say_more,
)
from gpupool.cli.pipeline_render import dag_tree, runs_table
from gpupool.schemas.pipelines import PipelineSpec, RunState, RunView
from gpupool.sdk import Client
from gpupool.sdk.pipelines import load_definition

app = typer.Typer(help="Pipelines: DAGs of steps that pass values and files.",
                  no_args_is_help=True)
secret_app = typer.Typer(help="Team secrets and variables (encrypted; values never shown).",
                         no_args_is_help=True)
app.add_typer(secret_app, name="secret")

File = Annotated[Path, typer.Argument(help="The pipeline's YAML file.")]
RunId = Annotated[int, typer.Argument(help="Pipeline run id.")]
Params = Annotated[list[str] | None, typer.Option(
    "--param", "-p", metavar="NAME=VALUE", help="A parameter (repeat); VALUE is YAML.")]
Wait = Annotated[bool, typer.Option(
    "--wait", help="Block until the run ends; exit 0 only if it succeeded (else 1).")]
EXIT_RUN_FAILED = 1


def _params(pairs: list[str] | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--param {pair!r}: expected NAME=VALUE")
        try:
            result[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            result[key] = value
    return result


def _definition(file: Path) -> PipelineSpec:
    with handled(str(file)):
        try:
            return load_definition(file)
        except ValueError as exc:
            if type(exc) is ValueError:
                raise fail(str(exc)) from None
            raise


def _finish(gp: Client, view: RunView, wait: bool, json_out: bool) -> None:
    if not wait:
        if json_out:
            print_json(view)
        else:
            out.print(f"pipeline run {view.id} ({view.name}) {view.state.value}")
        return
    with handled():
        final = gp.pipelines.wait(view.id)
    if json_out:
        print_json(final)
    else:
        out.print("\n".join(dag_tree(final)), soft_wrap=True, markup=False)
    if final.state != RunState.SUCCEEDED:
        raise typer.Exit(code=EXIT_RUN_FAILED)


@app.command()
def run(file: File, param: Params = None,
        priority: Annotated[int, typer.Option(help="-1000..1000; higher starts first.")] = 0,
        wait: Wait = False, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Start a run of the pipeline in FILE (checked first: nothing runs if it is invalid).

    Example: gpupool pipeline run examples/pipelines/five_steps.yaml -p rows=500 --wait
    """
    definition = _definition(file)
    with connect(url, token) as gp, handled(str(file)):
        view = gp.pipelines.run(definition, _params(param), priority, trigger="manual")
        _finish(gp, view, wait, json_out)


@app.command()
def validate(file: File, param: Params = None, url: Url = None, token: Token = None) -> None:
    """Check FILE (cycles, references, parameters) without running it; print the order."""
    definition = _definition(file)
    with connect(url, token) as gp, handled(str(file)):
        plan = gp.pipelines.validate(definition, _params(param))
    out.print(f"{file}: valid; order: {' → '.join(plan.order)}", markup=False)


@app.command(name="ls")
@app.command(name="list", hidden=True)
def ls(state: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
       name: Annotated[str | None, typer.Option(help="Only runs of this pipeline.")] = None,
       limit: Annotated[int, limit_option(100, "runs")] = 100,
       json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List pipeline runs, newest first."""
    with connect(url, token) as gp, handled():
        runs, more = cut(gp.pipelines.runs(state, name, limit=fetch_limit(limit)), limit)
    if json_out:
        print_json(runs)
    else:
        out.print(runs_table(runs))
    if more:
        say_more(limit, "runs")


@app.command()
def describe(run_id: RunId, json_out: Json = False, url: Url = None,
             token: Token = None) -> None:
    """A run's DAG as a tree with each step's state, outputs and stored files."""
    with connect(url, token) as gp, handled():
        view = gp.pipelines.get(run_id)
    if json_out:
        print_json(view)
        return
    out.print("\n".join(dag_tree(view)), soft_wrap=True, markup=False)
    out.print(f"trigger {view.trigger}  priority {view.priority}  params {view.params}"
              + (f"  re-run of {view.retry_of}" if view.retry_of else ""), markup=False)


@app.command()
def logs(run_id: RunId,
         step: Annotated[str | None, typer.Argument(help="One step (default: all).")] = None,
         url: Url = None, token: Token = None) -> None:
    """Step logs of a run, every attempt, secrets masked."""
    with connect(url, token) as gp, handled():
        chunk = gp.pipelines.logs(run_id, step)
    sys.stdout.write(chunk.data)


@app.command()
def cancel(run_id: RunId, url: Url = None, token: Token = None) -> None:
    """Cancel a run: running steps are stopped, the others will not run."""
    with connect(url, token) as gp, handled():
        view = gp.pipelines.cancel(run_id)
    out.print(f"pipeline run {view.id}: cancel requested", markup=False)


@app.command()
def retry(run_id: RunId, wait: Wait = False, json_out: Json = False, url: Url = None,
          token: Token = None) -> None:
    """Re-run a failed run from its failed steps, reusing the outputs of the others."""
    with connect(url, token) as gp, handled():
        view = gp.pipelines.retry(run_id)
        _finish(gp, view, wait, json_out)


@app.command()
def priority(run_id: RunId, value: Annotated[int, typer.Argument(help="-1000..1000.")],
             url: Url = None, token: Token = None) -> None:
    """Change the priority of a queued run."""
    with connect(url, token) as gp, handled():
        view = gp.pipelines.set_priority(run_id, value)
    out.print(f"pipeline run {view.id}: priority {view.priority}", markup=False)


@app.command()
def schedule(
    file: File,
    cron: Annotated[str, typer.Option(help="5-field cron, UTC, e.g. '0 3 * * *'.")],
    param: Params = None,
    concurrency: Annotated[str, typer.Option(help="allow, forbid or replace.")] = "allow",
    catchup_limit: Annotated[int, typer.Option(
        help="Most missed firings run after downtime (1: only the latest).")] = 1,
    url: Url = None, token: Token = None,
) -> None:
    """Run the pipeline in FILE on a cron schedule (replaces one of the same name)."""
    definition = _definition(file)
    body = {"definition": definition.model_dump(mode="json", by_alias=True, exclude_none=True),
            "cron": cron, "params": _params(param), "concurrency": concurrency,
            "catchup_limit": catchup_limit}
    with connect(url, token) as gp, handled(str(file)):
        view = gp.pipelines.schedule(body)
    out.print(f"schedule {view.name}: {view.cron}, next at {view.next_fire_at}", markup=False)


@app.command()
def schedules(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List cron schedules."""
    with connect(url, token) as gp, handled():
        found = gp.pipelines.schedules()
    if json_out:
        print_json(found)
        return
    for s in found:
        out.print(f"{s.name}  {s.cron}  {s.concurrency}  catch-up {s.catchup_limit}  "
                  f"next {s.next_fire_at}  skipped {s.skipped}", markup=False)


@secret_app.command(name="set")
def secret_set(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    from_file: Annotated[Path | None, typer.Option(help="Read the value from a file.")] = None,
    url: Url = None, token: Token = None,
) -> None:
    """Store a secret; the value is read from --from-file or stdin (never the command line)."""
    value = from_file.read_text() if from_file else sys.stdin.read()
    with connect(url, token) as gp, handled():
        view = gp.pipelines.set_secret(name, value.rstrip("\n") if not from_file else value)
    out.print(f"secret {view.name} stored for team {view.team}", markup=False)


@secret_app.command(name="ls")
@secret_app.command(name="list", hidden=True)
def secret_ls(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """List the team's secret names (never values)."""
    with connect(url, token) as gp, handled():
        found = gp.pipelines.secrets()
    if json_out:
        print_json(found)
        return
    for s in found:
        out.print(f"{s.name}  updated {s.updated_at:%Y-%m-%d %H:%M:%S}", markup=False)


@secret_app.command(name="rm")
def secret_rm(name: Annotated[str, typer.Argument(help="Secret name.")], url: Url = None,
              token: Token = None) -> None:
    """Delete a secret."""
    with connect(url, token) as gp, handled():
        gp.pipelines.delete_secret(name)
    out.print(f"secret {name} deleted", markup=False)
