"""Entry point of the ``gpupool`` command (``gpupool.cli.main:app``).

Every command is imported only when it runs or shows its help (``cli/lazy.py``): ``gpupool
--help`` imports Typer and nothing else of weight, ``gpupool ps`` the SDK but not the
simulator, numpy, matplotlib or the server. ``typer.main.get_command(app)`` is the whole
command tree (``group.commands[name]`` builds a command on first read). Help is plain text
(``lazy.plain_help``). Shell completion: ``gpupool --install-completion``.
"""

from __future__ import annotations

from typing import Any

import typer

from gpupool import __version__
from gpupool.cli.lazy import Lazy, build, lazy_group
from gpupool.cli.lean import GpupoolApp


def _sim() -> dict[str, Any]:
    from gpupool.cli.sim_cmd import sim

    return build(lambda app: app.command(name="sim")(sim))


def _up() -> dict[str, Any]:
    from gpupool.cli.up_cmd import up

    return build(lambda app: app.command(name="up")(up))


def _down() -> dict[str, Any]:
    from gpupool.cli.down_cmd import down

    return build(lambda app: app.command(name="down")(down))


def _jobs() -> dict[str, Any]:
    from gpupool.cli import jobs_cmd

    return build(jobs_cmd.register)


def _ps() -> dict[str, Any]:
    # `ps` alone, as jobs_cmd.register adds it, without the other job and admin commands
    # (the most typed command; tests/test_cli_fast.py checks both give the same command).
    from gpupool.cli.ps_cmd import ps

    return build(lambda app: app.command(name="ps")(ps))


def _pipeline() -> dict[str, Any]:
    from gpupool.cli import pipeline_cmd

    return build(lambda app: app.add_typer(pipeline_cmd.app, name="pipeline"))


def _notebook() -> dict[str, Any]:
    from gpupool.cli import notebook_cmd

    return build(lambda app: app.add_typer(notebook_cmd.app, name="notebook"))


def _registry() -> dict[str, Any]:
    from gpupool.cli import registry_cmd

    return build(lambda app: app.add_typer(registry_cmd.app, name="registry"))


def _service() -> dict[str, Any]:
    from gpupool.cli import service_cmd

    return build(lambda app: app.add_typer(service_cmd.app, name="service"))


def _serve() -> dict[str, Any]:
    from gpupool.cli.service_cmd import serve

    return build(lambda app: app.command(name="serve")(serve))


def _artifacts() -> dict[str, Any]:
    from gpupool.cli.artifacts_cmd import artifacts

    return build(lambda app: app.command(name="artifacts")(artifacts))


def _usage() -> dict[str, Any]:
    from gpupool.cli.usage_cmd import usage

    return build(lambda app: app.command(name="usage")(usage))


def _shell() -> dict[str, Any]:
    from gpupool.cli.shell_cmd import shell

    return build(lambda app: app.command(name="shell")(shell))


# Every command, in the order `gpupool --help` lists them (a new user's first: up, down, run),
# with its one-line help, shown without importing the command; each must be what the
# command's own help starts with (tests/test_cli_fast.py checks).
COMMANDS = {
    "up": Lazy(_up, "Start the gpupool server: API on 127.0.0.1 (or --host, over HTTPS with "
                    "--tls-cert and --tls-key), SQLite state, this machine's GPUs."),
    "down": Lazy(_down, "Stop the gpupool server (admin only)."),
    "run": Lazy(_jobs, "Submit a command as a job and print its id."),
    "submit": Lazy(_jobs, "Submit the job described in a YAML file."),
    "ps": Lazy(_ps, "List jobs, newest first: pending, starting and running ones unless "
                    "--all or --phase."),
    "logs": Lazy(_jobs, "Print a job's output (stdout and stderr together)."),
    "describe": Lazy(_jobs, "Show one job: phase, why it waits, where it runs, what it asked "
                            "for, its history."),
    "cancel": Lazy(_jobs, "Cancel jobs: a pending one at once, a running one after SIGTERM "
                          "and its grace period."),
    "nodes": Lazy(_jobs, "Nodes and their GPUs: model, memory, what is allocated and to which "
                         "jobs."),
    "queues": Lazy(_jobs, "Queues: quota, borrow limit, GPUs in use and borrowed, pending and "
                          "running jobs."),
    "artifacts": Lazy(_artifacts, "List a job's artifacts by attempt, or download them."),
    "usage": Lazy(_usage, "Allocated GPU-hours by team, user, job or queue over a window "
                          "(default: 7 days)."),
    "notebook": Lazy(_notebook, "Notebooks: JupyterLab on a GPU share, reached through the "
                                "gateway, suspended when idle."),
    "shell": Lazy(_shell, "An interactive terminal in a notebook's environment, through the "
                          "gateway."),
    "serve": Lazy(_serve, "Deploy the service described in a YAML file: create it, or "
                          "update it when the name exists."),
    "service": Lazy(_service, "Inference services: replicas on GPU shares behind the gateway, "
                              "autoscaled."),
    "registry": Lazy(_registry, "Registry logins for your team's container images."),
    "pipeline": Lazy(_pipeline, "Pipelines: DAGs of steps that pass values and files."),
    "admin": Lazy(_jobs, "Manage teams, users, tokens and read the audit log (needs an admin "
                         "token)."),
    "sim": Lazy(_sim, "Replay a trace through the scheduling core and compare placement "
                      "policies."),
    "version": Lazy(lambda: {}, "Print gpupool's version."),  # eager: defined below
}

app = GpupoolApp(
    name="gpupool",
    help="gpupool pools GPUs: whole cards or slices, fair queues, and a policy simulator.",
    cls=lazy_group(COMMANDS),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"max_content_width": 100},  # still no wider than the terminal
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gpupool {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print gpupool's version and exit."),
) -> None:
    """gpupool pools GPUs: whole cards or slices, fair queues, and a policy simulator."""


@app.command()
def version() -> None:
    """Print gpupool's version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
