"""``gpupool ps``: the job listing, one request per page of the server's cursor paging."""

from __future__ import annotations

from typing import Annotated

import typer

from gpupool.cli import jobs_render as render
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
from gpupool.schemas.jobs import JobOrder, Phase

ACTIVE = (Phase.PENDING, Phase.STARTING, Phase.RUNNING)
PHASES = ", ".join(p.value for p in Phase)
ORDERS = ", ".join(o.value for o in JobOrder)
DEFAULT_LIMIT = 200


def ps(
    all_phases: Annotated[
        bool, typer.Option("--all", "-a", help="Also jobs that ended (default: active only).")
    ] = False,
    all_teams: Annotated[
        bool, typer.Option("--all-teams", help="Kept for scripts: an admin always sees every "
                           "team's jobs, anyone else only their team's.")
    ] = False,
    phase: Annotated[
        str | None, typer.Option(metavar="PHASE", help=f"Only jobs in this phase: {PHASES}.")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Only jobs in this queue.")] = None,
    order: Annotated[
        str, typer.Option(metavar="ORDER", help=f"{ORDERS}: newest first, or as the scheduler "
                          "takes them (higher priority first, then first come first served).")
    ] = JobOrder.NEWEST.value,
    limit: Annotated[int, limit_option(DEFAULT_LIMIT, "jobs")] = DEFAULT_LIMIT,
    wide: Annotated[bool, typer.Option(
        "--wide", "-w", help="Whole pending reasons, wrapped (default: cut to one line).")
    ] = False,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List jobs, newest first: pending, starting and running ones unless --all or --phase.
    Says so when more jobs match than --limit shows."""
    if phase is not None and phase not in PHASES.split(", "):
        raise fail(f"--phase {phase!r}: choose one of {PHASES}")
    if order not in ORDERS.split(", "):
        raise fail(f"--order {order!r}: choose one of {ORDERS}")
    phases = [phase] if phase is not None else [] if all_phases else list(ACTIVE)
    with connect(url, token) as client, handled():
        found = client.jobs(phases or None, queue, order=order, limit=fetch_limit(limit))
    jobs, more = cut(found, limit)
    if json_out:
        print_json(jobs)
    else:
        empty = ("no jobs" if phase or all_phases
                 else "no active jobs (gpupool ps --all shows ended)")
        render.print_table(out, render.jobs_table(jobs, wide=wide), empty)
    if more:
        say_more(limit, "jobs")
