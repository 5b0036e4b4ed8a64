"""``gpupool sim --mode timed``: replay a trace on its own clock, with departures and a queue."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from gpupool.core.cluster import NodeSpec
    from gpupool.sim.timed import TimedResult
    from gpupool.sim.trace import TracePod


@functools.cache
def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles of the sim commands, made on first use (rich is imported
    then, not to show the help)."""
    from rich.console import Console

    return Console(), Console(stderr=True)


def run_timed_mode(
    cluster: Sequence[NodeSpec],
    trace: Sequence[TracePod],
    label: str,
    policies: Sequence[str],
    seeds: Sequence[int],
    json_out: Path | None,
    plot: Path | None,
    speedup: float = 1.0,
) -> None:
    """Run every (policy, seed), print a table, and write JSON / plot when asked."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table

    from gpupool.core.frag import TargetWorkload
    from gpupool.sim.timed import run_timed, speed_up_arrivals

    out, err = consoles()
    try:
        pods = speed_up_arrivals(trace, speedup) if speedup != 1.0 else list(trace)
        workload = TargetWorkload.from_requests(p.request for p in pods)
        results: list[TimedResult] = []
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("simulating runs", total=len(policies) * len(seeds))
            for policy in policies:
                for seed in seeds:
                    results.append(run_timed(cluster, pods, policy, seed, workload))
                    progress.advance(task)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    title = f"{label}, timed mode" + (f", arrivals {speedup:g}x faster" if speedup != 1 else "")
    table = Table(title=title)
    for name in ("policy", "seed", "started", "never", "delay mean s", "p50 s", "p95 s",
                 "GPU-hours", "peak alloc%"):
        table.add_column(name, justify="left" if name == "policy" else "right")
    for r in results:
        table.add_row(
            r.policy,
            str(r.seed),
            str(r.placed),
            str(r.never_placed),
            f"{r.queue_delay_mean_s:,.0f}",
            f"{r.queue_delay_p50_s:,.0f}",
            f"{r.queue_delay_p95_s:,.0f}",
            f"{r.gpu_hours_served:,.0f}",
            f"{r.peak_allocated_gpu_pct:.1f}",
        )
    out.print(table)
    if json_out is not None:
        payload = {
            "meta": {"mode": "timed", "speedup": speedup},
            "runs": [r.to_json() for r in results],
        }
        json_out.write_text(json.dumps(payload, indent=1) + "\n")
        out.print(f"results written to {json_out}")
    if plot is not None:
        from gpupool.sim.plot import plot_allocation

        plot_allocation(results, plot, f"GPU allocation over time — {title}")
        out.print(f"plot written to {plot}")
