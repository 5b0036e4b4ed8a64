"""How jobs, nodes, queues, teams and users look in a terminal (Rich). Pure formatting: no
requests, no exits. What each cell of the job table says is ``job_cells`` (shared with the
fast table of ``gpupool ps``, ``ps_table``); the schemas are imported for typing only."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gpupool.cli.job_cells import (
    HEADERS,
    PHASE_AT,
    PHASE_STYLE,
    JobRow,
    age,
    aware,
    gpus_text,
    mib,
    placement_text,
    share,
    shorten,
    view_row,
    why_text,
)
from gpupool.schemas.image_ref import IMAGES_LABEL

if TYPE_CHECKING:
    from gpupool.schemas.admin import TeamView, UserView
    from gpupool.schemas.cluster import NodeView, QueueView
    from gpupool.schemas.jobs import JobSpec, JobView, Placement


def gpus(spec: JobSpec) -> str:
    """What the job asks of GPUs in a few characters: ``2``, ``0.5``, ``20GiB``, ``-``."""
    return gpus_text(spec.gpus, spec.gpu_memory, spec.gpu_model)


def placement(place: Placement | None) -> str:
    if place is None:
        return ""
    return placement_text(place.node, place.gpus, len(place.ranks))


def local_time(at: datetime) -> str:
    return aware(at).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def phase_text(view: JobView) -> Text:
    return Text(view.phase.value, style=PHASE_STYLE[view.phase])


def _why(view: JobView) -> str:
    return why_text(view.reason, view.phase.value, view.exit_code)


def jobs_table(jobs: Sequence[JobView], now: datetime | None = None,
               wide: bool = False) -> Table:
    """One row per job: id, name, kind, queue, phase, GPUs asked, where, age, reason (cut
    to one short line unless ``wide``: then whole, wrapped)."""
    return rows_table([view_row(view, now) for view in jobs], wide)


def rows_table(rows: Sequence[JobRow], wide: bool = False) -> Table:
    """The table of ``jobs_table`` from the rows' text (``job_cells``)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, column in enumerate(HEADERS[:-1]):
        width = max([len(column), *(len(row.cells[i]) for row in rows)])
        table.add_column(
            column, no_wrap=True, justify="right" if column == "ID" else "left", min_width=width
        )
    table.add_column(HEADERS[-1], no_wrap=not wide, overflow="fold" if wide else "ellipsis")
    for row in rows:
        style = PHASE_STYLE[row.phase]
        cells = [escape(cell) for cell in row.cells[:-1]]
        cells[PHASE_AT] = f"[{style}]{cells[PHASE_AT]}[/]"
        table.add_row(*cells, escape(row.why if wide else shorten(row.why)))
    return table


def describe(view: JobView) -> Group:
    """Everything about one job; a pending job's reason comes right under its phase. A
    notebook's first row says ``notebook`` instead of ``job``, and it shows its URL, since
    when it is idle and its idle timeout (``notebook_render.describe_rows``)."""
    spec = view.spec
    notebook = view.kind == "notebook"
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    title = f"{view.id} · {escape(view.name)}"
    who = f"team {escape(view.team)}, user {escape(view.user)}, queue {escape(view.queue)}"
    head.add_row(view.kind.value,
                 Text.from_markup(f"[bold]{title}[/]  ({who}, priority {view.priority})"))
    phase = phase_text(view)
    phase.append(f"  (submitted {age(view.created_at)} ago)", style="default")
    head.add_row("phase", phase)
    if view.phase == "pending":
        waiting = view.reason or "waiting for the next scheduling pass"
        head.add_row(Text("waiting", style="bold yellow"), Text(waiting, style="bold yellow"))
    elif view.reason and view.reason != view.phase.value:
        head.add_row("reason", Text(view.reason))
    if notebook:
        from gpupool.cli.notebook_render import describe_rows

        for label, text in describe_rows(view):
            head.add_row(label, text)
    if view.placement is not None:
        head.add_row("placed", Text(_placement_line(view.placement)))
    if view.enforcement is not None:
        head.add_row("enforcement", Text(enforcement_line(view)))
    from gpupool.cli.gpu_render import describe_rows as gpu_rows

    for gpu_label, gpu_text in gpu_rows(view):
        head.add_row(gpu_label, gpu_text)
    if view.isolation is not None:
        head.add_row("isolation", Text(view.isolation))
    if view.exit_code is not None or view.attempts > 1:
        code = "-" if view.exit_code is None else str(view.exit_code)
        head.add_row("exit", Text(f"code {code}, attempts {view.attempts}"))
    if view.started_at is not None:
        head.add_row("started", local_time(view.started_at))
    if view.ended_at is not None:
        head.add_row("ended", local_time(view.ended_at))
    head.add_row("command", Text("JupyterLab (started by the server)" if notebook
                                 else shlex.join(spec.command)))
    head.add_row("asks", Text(_asks(spec)))
    if spec.env:
        head.add_row("env", Text(" ".join(f"{k}={shlex.quote(v)}" for k, v in spec.env.items())))
    head.add_row("workdir", Text(spec.workdir or "(the server's)"))
    if spec.image:
        head.add_row("image", Text(spec.image))
    restart: str = spec.restart
    if spec.restart == "on-failure":
        restart += f" (at most {spec.max_retries} retries)"
    if not notebook:  # resumed, never restarted
        head.add_row("restart", Text(f"{restart}; grace period {spec.grace_period_s:g} s"))
    head.add_row("time limit", Text(time_limit_line(view)))
    history = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    history.add_column("TIME", no_wrap=True)
    history.add_column("PHASE", no_wrap=True)
    history.add_column("MESSAGE")
    for event in view.events:
        style = PHASE_STYLE[event.phase]
        history.add_row(
            local_time(event.at), Text(event.phase.value, style=style), Text(event.message)
        )
    parts: list[Table | Text] = [head]
    if view.events:
        parts += [Text("\nhistory", style="bold"), history]
    return Group(*parts)


def time_limit_line(view: JobView) -> str:
    """How long one attempt may run (and, while it runs, when it will be stopped)."""
    limit = view.spec.time_limit_s
    if limit is None:
        return "none (the job is never stopped for time; backfill cannot plan around it)"
    text = f"{seconds_text(limit)} per attempt"
    if view.phase == "running" and view.started_at is not None:
        end = aware(view.started_at) + timedelta(seconds=limit)
        text += f" (stopped at {local_time(end)} if still running)"
    return text


def seconds_text(seconds: float) -> str:
    """``90`` → ``1m 30s``, ``7200`` → ``2h``: the largest units, zeros left out."""
    left = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts) or f"{seconds:g}s"


def enforcement_line(view: JobView) -> str:
    """The mechanism holding the job to its share, with the per-GPU limits it enforces."""
    text = view.enforcement or ""
    place = view.placement
    if view.enforcement == "interposer" and place is not None:
        limits = []
        if view.gpu_memory_limit_mib or place.gpu_memory_mib:
            limit = view.gpu_memory_limit_mib or place.gpu_memory_mib
            limits.append(f"GPU memory limit {limit} MiB")
        if 0 < place.gpu_milli < 1000:
            limits.append(f"compute fraction {share(place.gpu_milli)}")
        if limits:
            text += f" (per GPU: {', '.join(limits)})"
    return text


def _placement_line(place: Placement) -> str:
    if len(place.ranks) > 1:
        return "; ".join(
            f"node rank {i}: {r.node}" + (f" GPUs {','.join(map(str, r.gpus))}" if r.gpus else "")
            for i, r in enumerate(place.ranks))
    if not place.gpus:
        return f"node {place.node} (no GPU)"
    each = []
    if 0 < place.gpu_milli < 1000:
        each.append(f"a {share(place.gpu_milli)} share")
    if place.gpu_memory_mib:
        each.append(f"{mib(place.gpu_memory_mib)} of GPU memory")
    detail = f" ({', '.join(each)})" if each else ""
    listed = ",".join(str(g) for g in place.gpus)
    return f"node {place.node}, GPU{'s' if len(place.gpus) > 1 else ''} {listed}{detail}"


def _asks(spec: JobSpec) -> str:
    asks = []
    if spec.nodes > 1:
        asks.append(f"{spec.nodes} nodes × {spec.procs_per_node} process(es)")
    if spec.gpus:
        each = " per node" if spec.nodes > 1 else ""
        asks.append(f"{spec.gpus:g} GPU{each}" if spec.gpus >= 1 else f"{spec.gpus:g} of a GPU")
    if spec.gpu_memory is not None:
        asks.append(f"{mib(spec.gpu_memory)} GPU memory")
    if spec.gpu_model:
        asks.append(f"model {spec.gpu_model}")
    asks.append(f"{spec.cpu:g} CPU" if spec.cpu else "no CPU reserved")
    asks.append(f"{mib(spec.memory)} memory" if spec.memory else "no memory reserved")
    return ", ".join(asks)


def nodes_table(nodes: Sequence[NodeView]) -> Table:
    """One row per GPU (one for a node without GPUs), the node's CPU and memory on its first."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NODE", "CPU", "MEMORY", "GPU", "MODEL", "GPU MEM", "ALLOCATED"):
        table.add_column(column, no_wrap=True)
    table.add_column("JOBS", overflow="fold")
    table.add_column("SHARES ENFORCED BY", no_wrap=True)
    table.add_column("IMAGES", no_wrap=True)
    for node in nodes:
        cpu = f"{share(node.cpu_allocated_milli)}/{share(node.cpu_milli)}"
        memory = f"{mib(node.memory_allocated_mib)}/{mib(node.memory_mib)}"
        first = [escape(node.name) + ("" if node.source == "nvml" else f" ({node.source})")]
        first += [cpu, memory]
        enforced = ",".join(node.mechanisms) or "none"
        images = node.labels.get(IMAGES_LABEL, "no")
        if not node.gpus:
            table.add_row(*first, "-", "", "", "", "", "", images, end_section=True)
        for i, gpu in enumerate(node.gpus):
            lead = first if i == 0 else ["", "", ""]
            used = share(gpu.allocated_milli) if gpu.allocated_milli else "free"
            if gpu.allocated_memory_mib:
                used += f" · {mib(gpu.allocated_memory_mib)}"
            style = "green" if not gpu.allocated_milli and not gpu.allocated_memory_mib else ""
            table.add_row(
                *lead,
                str(gpu.index),
                escape(gpu.model),
                mib(gpu.memory_mib),
                Text(used, style=style),
                ",".join(gpu.jobs),
                enforced if i == 0 else "",
                images if i == 0 else "",
                end_section=i == len(node.gpus) - 1,
            )
    return table


def queues_table(queues: Sequence[QueueView]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ("QUEUE", "TEAM", "QUOTA", "BORROW LIMIT", "USED", "BORROWED", "PENDING", "RUNNING")
    for column in columns:
        table.add_column(column, no_wrap=True, justify="left" if column in columns[:2] else "right")
    for q in queues:
        table.add_row(
            escape(q.name),
            escape(q.team),
            f"{q.quota_gpus:g}",
            f"{q.borrow_limit_gpus:g}",
            f"{q.used_gpus:g}",
            f"{q.borrowed_gpus:g}",
            str(q.pending),
            str(q.running),
        )
    return table


def teams_table(teams: Sequence[TeamView]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("TEAM", no_wrap=True)
    table.add_column("QUOTA GPUS", justify="right")
    table.add_column("BORROW LIMIT GPUS", justify="right")
    for t in teams:
        table.add_row(escape(t.name), f"{t.quota_gpus:g}", f"{t.borrow_limit_gpus:g}")
    return table


def users_table(users: Sequence[UserView]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("USER", "TEAM", "ADMIN"):
        table.add_column(column, no_wrap=True)
    for u in users:
        table.add_row(escape(u.name), escape(u.team), "yes" if u.admin else "")
    return table


def print_table(console: Console, table: Table, empty: str) -> None:
    """The table, or ``empty`` (dim) when it has no rows."""
    if table.row_count:
        console.print(table)
    else:
        console.print(empty, style="dim")


def final_line(view: JobView) -> str:
    """How a job ended, in one line: ``job 7 (train) failed: failed (exit code 3)``."""
    line = f"job {view.id} ({view.name}) {view.phase.value}"
    if view.reason and view.reason != view.phase.value:
        return f"{line}: {view.reason}"
    if view.exit_code is not None and view.phase != "succeeded":
        return f"{line} with exit code {view.exit_code}"
    return line
