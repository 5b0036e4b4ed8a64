"""How notebooks look in a terminal: the table of ``gpupool notebook ls``, the notebook rows
of ``gpupool describe``, and the one-line progress of a wait. Pure formatting: no requests,
no exits; the schemas are imported for typing only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gpupool.cli.job_cells import PHASE_STYLE, age, gpus_text, shorten
from gpupool.cli.jobs_render import local_time, seconds_text

if TYPE_CHECKING:
    from gpupool.schemas.jobs import JobView

LS_HEADERS = ("NAME", "ID", "PHASE", "GPUS", "IDLE", "URL")
LIVE = ("pending", "starting", "running", "suspended")
"""The phases ``gpupool notebook ls`` shows without --all (those of a notebook not deleted)."""


def idle_cell(view: JobView, now: datetime | None = None) -> str:
    """The IDLE cell: how long it has been idle (``5m``); ``busy`` while it runs and is in
    use; ``-`` when it does not run."""
    if view.idle_since is not None:
        return age(view.idle_since, now)
    return "busy" if view.phase == "running" and view.url is not None else "-"


def notebooks_table(views: Sequence[JobView], now: datetime | None = None) -> Table:
    """One row per notebook: name, id, phase, GPUs asked, idle for, URL (``-``: none)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in LS_HEADERS:
        table.add_column(column, no_wrap=True, justify="right" if column == "ID" else "left")
    for view in views:
        spec = view.spec
        phase = f"[{PHASE_STYLE[view.phase]}]{view.phase.value}[/]"
        table.add_row(escape(shorten(view.name, 40)), view.id, phase,
                      gpus_text(spec.gpus, spec.gpu_memory, spec.gpu_model),
                      idle_cell(view, now), escape(view.url or "-"))
    return table


def url_line(view: JobView) -> str:
    """Where the notebook answers, or why it does not (yet)."""
    if view.url is not None:
        return view.url
    if view.phase == "suspended":
        return f"none while suspended (gpupool notebook resume {view.name})"
    if view.phase.final:
        return "none (it ended)"
    return "not yet: JupyterLab starts once the notebook is placed"


def idle_line(view: JobView) -> str | None:
    """Since when the notebook is idle and when that suspends it; None when it does not
    run (nothing to say)."""
    limit = view.spec.idle_timeout_s
    after = f"{seconds_text(limit)} idle" if limit is not None else "the server's idle limit"
    if view.idle_since is not None:
        return (f"since {local_time(view.idle_since)} ({age(view.idle_since)}); suspended "
                f"after {after}")
    if view.phase == "running":
        return f"no: in use (suspended after {after})"
    return None


def describe_rows(view: JobView) -> list[tuple[str, Text]]:
    """The rows ``gpupool describe`` adds for a notebook (after its phase): url, idle."""
    rows = [("url", Text(url_line(view)))]
    idle = idle_line(view)
    if idle is not None:
        rows.append(("idle", Text(idle)))
    limit = view.spec.idle_timeout_s
    rows.append(("idle timeout", Text(seconds_text(limit) if limit is not None
                                      else "the server's default")))
    return rows


def progress_line(view: JobView) -> str:
    """What a wait for a notebook says while it is not ready: its phase and why."""
    head = f"notebook {view.name} ({view.id}) is {view.phase.value}"
    if view.phase == "running":
        return f"{head}: waiting for JupyterLab to answer"
    if view.reason and view.reason != view.phase.value:
        return f"{head}: {' '.join(view.reason.split())}"
    return head
