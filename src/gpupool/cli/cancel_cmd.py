"""``gpupool cancel``: one job, several, or every pending job of yours."""

from __future__ import annotations

from typing import Annotated

import typer

from gpupool.cli.client_opts import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Json,
    Token,
    Url,
    connect,
    err,
    fail,
    handled,
    print_json,
)
from gpupool.schemas.jobs import JobView, Phase
from gpupool.sdk import ApiError


def cancel(
    jobs: Annotated[list[str] | None, typer.Argument(
        metavar="JOB...", help="Job ids or names (a name: the newest job of that name).")] = None,
    all_pending: Annotated[bool, typer.Option(
        "--all-pending", help="Cancel every pending job you submitted (with --queue: only "
                              "in that queue).")] = False,
    queue: Annotated[str | None, typer.Option(
        help="With --all-pending: only jobs in this queue.")] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Cancel jobs: a pending one at once, a running one after SIGTERM and its grace period.

    Each job is tried even when another fails; the exit code is 2 if any was refused (3 if
    the server could not be reached)."""
    refs = list(jobs or [])
    if all_pending == bool(refs):
        raise fail("give job ids or names, or --all-pending (not both)")
    if queue is not None and not all_pending:
        raise fail("--queue goes with --all-pending")
    done: list[JobView] = []
    refused: ApiError | None = None
    with connect(url, token) as client, handled():
        if all_pending:
            me = client.whoami().user
            refs = [j.id for j in client.jobs(Phase.PENDING, queue) if j.user == me]
            if not refs:
                err.print("no pending jobs of yours" + (f" in queue {queue}" if queue else ""),
                          markup=False)
        for ref in refs:
            try:
                view = client.cancel(ref)
            except ApiError as exc:
                if exc.status == 0:
                    raise
                err.print(f"job {ref}: {exc.message}", markup=False, soft_wrap=True)
                refused = exc
                continue
            done.append(view)
            if not json_out:
                typer.echo(f"job {view.id} {view.phase.value}" if view.phase.final else
                           f"cancel requested for job {view.id} (it was {view.phase.value})")
    if json_out:
        print_json(done[0] if len(done) == 1 and len(refs) == 1 else done)
    if refused is not None:
        raise typer.Exit(code=EXIT_UNREACHABLE if refused.status >= 500 else EXIT_USAGE)
