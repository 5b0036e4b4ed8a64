"""``gpupool logs``: a job's output, now or as it comes (``-f``), and the tail of a failed
job's output for ``run --wait``."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from gpupool.cli import jobs_render as render
from gpupool.cli.client_opts import Token, Url, connect, err, handled
from gpupool.schemas.jobs import JobView, Phase
from gpupool.sdk import Client

Ref = Annotated[str, typer.Argument(help="Job id, or name (the newest job of that name).")]
TAIL_LINES = 20


def logs(
    job: Ref,
    follow: Annotated[
        bool, typer.Option("--follow", "-f",
                           help="Keep printing until the job ends, then say how it ended.")
    ] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Print a job's output (stdout and stderr together)."""
    with connect(url, token) as client, handled():
        view = client.job(job)
        if follow:
            for text in client.follow_logs(view.id):
                _write(text)
            err.print(render.final_line(client.job(view.id)), soft_wrap=True, markup=False)
            return
        offset = 0
        while True:
            chunk = client.logs(view.id, offset)
            _write(chunk.data)
            if chunk.complete or not chunk.data or chunk.offset == offset:
                break
            offset = chunk.offset
    if offset == 0 and not chunk.data and view.phase in (Phase.PENDING, Phase.STARTING):
        why = f": {view.reason}" if view.reason else ""
        err.print(f"job {view.id} is {view.phase.value}{why}; no output yet "
                  f"(gpupool logs -f {view.id} waits for it)", soft_wrap=True, markup=False)


def print_tail(client: Client, view: JobView) -> None:
    """The last lines of a failed job's output, on stderr, under a heading."""
    tail = client.log_tail(view.id, TAIL_LINES)
    if not tail.strip():
        err.print(f"job {view.id} wrote no output", markup=False)
        return
    err.print(f"last lines of the output of job {view.id} (gpupool logs {view.id} has all):",
              markup=False)
    sys.stderr.write(tail if tail.endswith("\n") else tail + "\n")
    sys.stderr.flush()


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `gpupool logs JOB | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(code=0) from None
