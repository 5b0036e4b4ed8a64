"""Entry point of the ``gpupool`` command."""

from __future__ import annotations

import typer

from gpupool import __version__
from gpupool.cli import jobs_cmd, pipeline_cmd
from gpupool.cli.sim_cmd import sim
from gpupool.cli.up_cmd import up

app = typer.Typer(
    name="gpupool",
    help="gpupool pools GPUs: whole cards or slices, fair queues, and a policy simulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="sim")(sim)
app.command(name="up")(up)
jobs_cmd.register(app)
app.add_typer(pipeline_cmd.app, name="pipeline")


@app.command()
def version() -> None:
    """Print gpupool's version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
