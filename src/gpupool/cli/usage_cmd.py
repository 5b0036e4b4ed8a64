"""``gpupool usage``: allocated GPU-seconds by team, user, job or queue over a window, as a
table, JSON or CSV (``GET /api/v1/usage``). Users see their team's usage, admins all.
``--since``/``--until`` take a duration back from now (``7d``, ``12h``) or an ISO 8601
date-time; a bad one exits 2 naming it."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from gpupool.cli.client_opts import Json, Token, Url, connect, fail, handled, out, print_json
from gpupool.schemas.usage import UsageBy, UsageRow

COLUMNS = ("key", "gpu_seconds", "gpu_seconds_used", "jobs")


def when(text: str, option: str, now: datetime) -> datetime:
    """``7d`` → 7 days before ``now``; else an ISO 8601 date-time (UTC when it names no
    zone). Exit 2 naming ``option`` otherwise."""
    from gpupool.cli.admin_render import DURATION_HELP, parse_duration

    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option}: {text!r} is neither a duration back from now ({DURATION_HELP}) "
                   "nor an ISO 8601 date-time (e.g. 2026-12-01 or 2026-12-01T08:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def table(rows: list[UsageRow], by: UsageBy) -> Table:
    made = Table(box=None, pad_edge=False, header_style="bold")
    for name, right in ((by.value.upper(), False), ("GPU-HOURS", True), ("USED", True),
                        ("JOBS", True)):
        made.add_column(name, justify="right" if right else "left", no_wrap=True)
    for r in rows:
        used = "-" if r.gpu_seconds_used is None else f"{r.gpu_seconds_used / 3600:,.2f}"
        made.add_row(r.key, f"{r.gpu_seconds / 3600:,.2f}", used, str(r.jobs))
    return made


def usage(
    by: Annotated[UsageBy, typer.Option("--by", help="What each row sums over.")] = UsageBy.TEAM,
    since: Annotated[str, typer.Option(metavar="WHEN",
        help="Start of the window: a duration back from now (7d, 12h) or an ISO date-time.")]
        = "7d",
    until: Annotated[str | None, typer.Option(metavar="WHEN",
        help="End of the window, as --since (default: now).")] = None,
    json_out: Json = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV (the --json columns).")]
        = False,
    url: Url = None, token: Token = None,
) -> None:
    """Allocated GPU-hours by team, user, job or queue over a window (default: 7 days)."""
    if json_out and csv_out:
        raise fail("--json and --csv: choose one")
    now = datetime.now(UTC)
    start = when(since, "--since", now)
    end = when(until, "--until", now) if until else None
    with connect(url, token) as client, handled():
        rows = client.usage(by.value, start, end)
    if json_out:
        print_json(rows)
    elif csv_out:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r.key, r.gpu_seconds,
                             "" if r.gpu_seconds_used is None else r.gpu_seconds_used, r.jobs])
    elif rows:
        out.print(table(rows, by))
        total = sum(r.gpu_seconds for r in rows) / 3600
        out.print(f"{total:,.2f} GPU-hours from {start:%Y-%m-%d %H:%M} UTC"
                  + (f" to {end:%Y-%m-%d %H:%M} UTC" if end else " to now"), style="dim")
    else:
        out.print("no usage in this window", style="dim")
