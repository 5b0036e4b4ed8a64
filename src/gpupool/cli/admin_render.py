"""How teams, users, tokens and the audit log look in a terminal, and durations typed on the
command line (``30m``, ``12h``, ``30d``, ``2w``). Pure: no requests, no exits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from rich.markup import escape
from rich.table import Table

from gpupool.cli.jobs_render import local_time, seconds_text
from gpupool.schemas.admin import AuditEvent, TeamView, TokenInfo, TokenState, UserView

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
DURATION_HELP = "a number and a unit: s, m, h, d or w (e.g. 90s, 30m, 12h, 30d, 2w)"


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``30m`` -> 1800.0); ValueError saying what is expected."""
    found = _DURATION.match(text)
    if not found or float(found.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: use {DURATION_HELP}")
    return float(found.group(1)) * _UNITS[found.group(2).lower()]


def parse_seconds(value: object) -> float:
    """Seconds in ``value``: a number (seconds; as text too, ``"90"``) or a duration as
    :func:`parse_duration` reads it (``"2h"``). ValueError saying what is expected (bounds
    are the caller's)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
        found = _DURATION.match(value)
        if found:
            return float(found.group(1)) * _UNITS[found.group(2).lower()]
        raise ValueError(f"{value!r} is not a duration: use seconds (e.g. 3600) or "
                         f"{DURATION_HELP}")
    raise ValueError(f"expected seconds (e.g. 3600) or {DURATION_HELP}, "
                     f"not {type(value).__name__}")


def teams_table(teams: Sequence[TeamView]) -> Table:
    """Columns TEAM, QUOTA GPUS, BORROW LIMIT GPUS, WEIGHT, COHORT (-: none), LENDS GPUS
    (the most of its unused quota it lends to its cohort; all: no limit; -: no cohort and
    no limit), RUN LIMIT (its queue's default run limit; -: the server's), NB IDLE, NB MAX
    IDLE and NB LIFETIME (its notebooks' default and longest idle timeouts and their
    longest run; -: the server's)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("TEAM", no_wrap=True)
    for column in ("QUOTA GPUS", "BORROW LIMIT GPUS", "WEIGHT"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("COHORT", no_wrap=True)
    table.add_column("LENDS GPUS", justify="right", no_wrap=True)
    for column in ("RUN LIMIT", "NB IDLE", "NB MAX IDLE", "NB LIFETIME"):
        table.add_column(column, justify="right", no_wrap=True)
    for t in teams:
        if t.lend_limit_gpus is not None:
            lends = f"{t.lend_limit_gpus:g}"
        else:
            lends = "all" if t.cohort else "-"
        table.add_row(escape(t.name), f"{t.quota_gpus:g}", f"{t.borrow_limit_gpus:g}",
                      f"{t.weight:g}", escape(t.cohort or "-"), lends,
                      *(_or_dash(v) for v in (t.default_run_limit_s, t.notebook_idle_timeout_s,
                                              t.notebook_max_idle_timeout_s,
                                              t.notebook_max_lifetime_s)))
    return table


def _or_dash(seconds: float | None) -> str:
    return "-" if seconds is None else seconds_text(seconds)


def team_line(team: TeamView) -> str:
    """One team in one line, as create and set print it."""
    line = (f"team {team.name}: quota {team.quota_gpus:g} GPUs, borrow limit "
            f"{team.borrow_limit_gpus:g} GPUs, weight {team.weight:g}")
    if team.cohort:
        lends = ("all its unused quota" if team.lend_limit_gpus is None
                 else f"at most {team.lend_limit_gpus:g} GPUs")
        line += f", cohort {team.cohort} (lends {lends})"
    if team.default_run_limit_s is not None:
        line += f", default run limit {seconds_text(team.default_run_limit_s)}"
    for seconds, words in ((team.notebook_idle_timeout_s, "notebook idle timeout"),
                           (team.notebook_max_idle_timeout_s, "notebook max idle timeout"),
                           (team.notebook_max_lifetime_s, "notebook max lifetime")):
        if seconds is not None:
            line += f", {words} {seconds_text(seconds)}"
    return line


def _when(at: datetime | None, empty: str = "") -> str:
    return local_time(at) if at is not None else empty


def users_table(users: Sequence[UserView]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("USER", "TEAM", "ADMIN", "DISABLED", "UNIX USER"):
        table.add_column(column, no_wrap=True)
    for u in users:
        table.add_row(
            escape(u.name), escape(u.team), "yes" if u.admin else "",
            "[red]disabled[/]" if u.disabled else "", escape(u.unix_user or "-"),
        )
    return table


_STATE_STYLE = {TokenState.LIVE: "green", TokenState.EXPIRED: "dim", TokenState.REVOKED: "red"}


def tokens_table(tokens: Sequence[TokenInfo], with_state: bool = False) -> Table:
    """Columns ID, USER, SCOPE, CREATED, EXPIRES, LAST USED (+ STATE); never the token
    itself."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", justify="right", no_wrap=True)
    for column in ("USER", "SCOPE", "CREATED", "EXPIRES", "LAST USED"):
        table.add_column(column, no_wrap=True)
    if with_state:
        table.add_column("STATE", no_wrap=True)
    for t in tokens:
        row = [
            str(t.id), escape(t.user), t.scope, _when(t.created_at), _when(t.expires_at, "never"),
            _when(t.last_used_at, "never"),
        ]
        if with_state:
            row.append(f"[{_STATE_STYLE[t.state]}]{t.state.value}[/]")
        table.add_row(*row)
    return table


def audit_table(events: Sequence[AuditEvent]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("AT", "ACTOR", "ACTION", "TARGET", "FROM", "DETAIL"):
        table.add_column(column, no_wrap=column != "DETAIL")
    for e in events:
        table.add_row(
            local_time(e.at), escape(e.actor or "-"), escape(e.action), escape(e.target),
            escape(e.address), escape(e.detail),
        )
    return table
