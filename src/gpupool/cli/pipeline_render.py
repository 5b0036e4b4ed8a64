"""Text views of pipeline runs: the DAG as a tree with step states, and the run table."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from gpupool.schemas.pipelines import RunView, StepState, StepView

MARK = {
    StepState.SUCCEEDED: "✓", StepState.REUSED: "↺", StepState.FAILED: "✗",
    StepState.RUNNING: "▶", StepState.STARTING: "▶", StepState.RETRYING: "↻",
    StepState.WAITING: "·", StepState.SKIPPED: "-", StepState.CANCELLED: "⊘",
}


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _line(step: StepView) -> str:
    parts = [f"{MARK[step.state]} {step.name}", step.state.value, f"[{step.kind}]"]
    if step.attempt > 1:
        parts.append(f"attempt {step.attempt}")
    if step.job_id:
        parts.append(f"job {step.job_id}")
    if step.child_run:
        parts.append(f"child run {step.child_run}")
    if step.message and step.state not in (StepState.SUCCEEDED, StepState.WAITING):
        parts.append(f"— {step.message}")
    return "  ".join(parts)


def dag_tree(run: RunView, details: bool = True) -> list[str]:
    """The run's steps as a tree: roots first, each step under the first step it depends
    on; a step with several parents appears again under the others as ``(see above)``.
    With ``details``, outputs and stored files are listed under each step."""
    children: dict[str, list[str]] = {s.name: [] for s in run.steps}
    for step in run.steps:
        for dep in step.depends_on:
            children[dep].append(step.name)
    by_name = {s.name: s for s in run.steps}
    lines = [f"{run.name}  run {run.id}: {run.state.value}"
             + (f" — {run.message}" if run.message and not run.state.final else "")]
    shown: set[str] = set()

    def walk(name: str, prefix: str, last: bool) -> None:
        branch = "└── " if last else "├── "
        step = by_name[name]
        if name in shown:
            lines.append(f"{prefix}{branch}{name} (see above)")
            return
        shown.add(name)
        lines.append(f"{prefix}{branch}{_line(step)}")
        inner = prefix + ("    " if last else "│   ")
        kids = children[name]
        if details:
            extra = [f"{k} = {_value(v)}" for k, v in step.outputs.items()]
            extra += [f"file {k}: {v}" for k, v in step.files.items()]
            for item in extra:
                lines.append(f"{inner}{'│ ' if kids else '  '} {item}")
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1)

    roots = [s.name for s in run.steps if not s.depends_on]
    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    return lines


def runs_table(runs: list[RunView]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "STATE", "PRIORITY", "TRIGGER", "CREATED", "MESSAGE"):
        table.add_column(column)
    for run in runs:
        table.add_row(run.id, run.name, run.state.value, str(run.priority), run.trigger,
                      run.created_at.strftime("%Y-%m-%d %H:%M:%S"), run.message)
    return table
