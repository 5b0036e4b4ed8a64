"""How services look in a terminal: the table of ``gpupool service ls`` and the page of
``gpupool service describe``. Pure formatting: no requests, no exits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gpupool.cli.job_cells import gpus_text
from gpupool.cli.jobs_render import local_time

if TYPE_CHECKING:
    from gpupool.schemas.services import ServiceKeyView, ServiceView

LS_HEADERS = ("NAME", "TEAM", "READY", "DESIRED", "GPUS", "AUTH", "INFLIGHT", "URL")
STATE_STYLE = {"ready": "green", "draining": "yellow", "starting": "cyan", "pending": "dim",
               "stopping": "dim"}


def services_table(views: Sequence[ServiceView]) -> Table:
    """One row per service."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in LS_HEADERS:
        table.add_column(column, no_wrap=True)
    for view in views:
        spec = view.spec
        table.add_row(escape(view.name), escape(view.team), str(view.ready_replicas),
                      f"{view.desired_replicas} ({spec.replicas.min}-{spec.replicas.max})",
                      gpus_text(spec.gpus, spec.gpu_memory, spec.gpu_model), spec.auth,
                      str(view.inflight), escape(view.url))
    return table


def describe(view: ServiceView) -> Group:
    """Everything about one service: URL, spec, scaling and its replicas."""
    spec = view.spec
    lines = Table.grid(padding=(0, 2))
    lines.add_column(style="bold")
    lines.add_column()
    rows = [
        ("Name", view.name), ("Team", f"{view.team} (deployed by {view.user})"),
        ("URL", view.url),
        ("Auth", "public: anyone may call it" if spec.auth == "public" else
         "token: a gpupool token of its team, or one of its keys (Bearer)"),
        ("Command", " ".join(spec.command)),
        ("Per replica", gpus_text(spec.gpus, spec.gpu_memory, spec.gpu_model)
         + (f", {spec.cpu:g} CPU" if spec.cpu else "")),
        ("Replicas", f"{view.ready_replicas} ready, {view.desired_replicas} desired "
         f"(min {spec.replicas.min}, max {spec.replicas.max})"),
        ("Scaling", f"{spec.scaling.target_inflight:g} requests in flight per replica, "
         f"cooldown {spec.scaling.cooldown_s:g} s; {view.inflight} in flight now"),
        ("Readiness", f"GET {spec.readiness.path}"),
        ("Cold start", "none yet" if view.last_cold_start_s is None else
         f"{view.last_cold_start_s:.2f} s the last time (first waiting request to a ready "
         f"replica; the wait is at most {spec.wake_timeout_s:g} s, then 503)"),
        ("Generation", f"{view.generation} (updated {local_time(view.updated_at)})"),
        ("Created", local_time(view.created_at)),
    ]
    for name, value in rows:
        lines.add_row(name, Text(value))
    replicas = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("REPLICA", "GEN", "STATE", "NODE", "GPUS", "SHARE", "INFLIGHT"):
        replicas.add_column(column, no_wrap=True)
    for r in view.replicas:
        style = STATE_STYLE.get(r.state, "")
        replicas.add_row(r.id, str(r.generation), f"[{style}]{r.state}[/]" if style else r.state,
                         escape(r.node or "-"),
                         ",".join(str(g) for g in r.gpus) if r.gpus else "-",
                         f"{r.gpu_share:g}" if r.gpu_share else "-", str(r.inflight))
    if not view.replicas:
        return Group(lines, Text(""), Text("no replicas (scaled to zero, or not started yet)",
                                           style="dim"))
    return Group(lines, Text(""), replicas)


def keys_table(keys: Sequence[ServiceKeyView]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "CREATED", "REVOKED"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(escape(key.name), local_time(key.created_at),
                      local_time(key.revoked_at) if key.revoked_at else "-")
    return table
