"""``gpupool ps``: the job listing, one request per page of the server's cursor paging.

The table is drawn from the server's JSON objects (``sdk.raw``, ``job_cells.json_row``,
``ps_table``): neither the models of ``gpupool.schemas`` nor pydantic are imported for it,
and 200 rows are not laid out by a rich Table (issue 15, item 6: together, more than half of
what ``ps`` took; bench/results/cli.md). It says what the table of the validated JobViews
said (``tests/test_ps_fast.py``). ``--json`` prints the validated JobViews, as
``Client.jobs`` gives them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from gpupool.cli.client_opts import (
    Json,
    Token,
    Url,
    connect,
    connect_raw,
    cut,
    fail,
    fetch_limit,
    handled,
    limit_option,
    out,
    print_json,
    say_more,
)
from gpupool.cli.job_cells import JobRow, json_row
from gpupool.cli.ps_table import print_jobs
from gpupool.sdk._http import API, unexpected

# The values of schemas.jobs.Phase and JobOrder, copied so that `ps` need not import the
# models (tests/test_ps_fast.py checks that they are the same).
ACTIVE = ("pending", "starting", "running")
PHASES = "pending, starting, running, succeeded, failed, cancelled, suspended"
ORDERS = "newest, queue"
DEFAULT_LIMIT = 200
NEWEST = "newest"


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
    ] = NEWEST,
    limit: Annotated[int, limit_option(DEFAULT_LIMIT, "jobs")] = DEFAULT_LIMIT,
    wide: Annotated[bool, typer.Option(
        "--wide", "-w", help="Whole pending reasons, wrapped (default: cut to one line).")
    ] = False,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List jobs, newest first: pending, starting and running ones unless --all or --phase.
    Says so when more jobs match than --limit shows.

    Notebooks are listed too (KIND notebook); a suspended one with --all or --phase
    suspended (gpupool notebook ls lists them all)."""
    if phase is not None and phase not in PHASES.split(", "):
        raise fail(f"--phase {phase!r}: choose one of {PHASES}")
    if order not in ORDERS.split(", "):
        raise fail(f"--order {order!r}: choose one of {ORDERS}")
    phases = [phase] if phase is not None else [] if all_phases else list(ACTIVE)
    if json_out:
        with connect(url, token) as client, handled():
            found = client.jobs(phases or None, queue, order=order, limit=fetch_limit(limit))
        jobs, more = cut(found, limit)
        print_json(jobs)
    else:
        with connect_raw(url, token) as raw, handled():
            objects, more = cut(raw.jobs(phases or None, queue, order=order,
                                         limit=fetch_limit(limit)), limit)
            rows = table_rows(objects)
        empty = ("no jobs" if phase or all_phases
                 else "no active jobs (gpupool ps --all shows ended)")
        print_jobs(out, rows, empty, wide=wide)
    if more:
        say_more(limit, "jobs")


def table_rows(objects: list[dict[str, Any]], now: datetime | None = None) -> list[JobRow]:
    """The table's rows of the server's job objects; ApiError (as ``Client.jobs`` raises
    for an answer that breaks the contract) when one lacks what the table shows."""
    now = now or datetime.now(UTC)
    try:
        return [json_row(job, now) for job in objects]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = f"{exc.args[0]}: missing" if isinstance(exc, KeyError) else str(exc)
        raise unexpected("GET", f"{API}/jobs", 200, problem) from None
