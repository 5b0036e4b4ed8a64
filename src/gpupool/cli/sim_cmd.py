"""``gpupool sim``: compare placement policies on a trace or on the built-in synthetic one.

The simulator, numpy, rich and matplotlib are imported when a simulation runs (matplotlib
only for ``--plot``), not to build the command or show its help."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from gpupool.cli.choices import FGD_STUDY_POLICIES, POLICIES, STUDY_VARIANTS, completer
from gpupool.cli.team_sim_cmd import Order, TeamArgs
from gpupool.cli.timed_cmd import consoles

if TYPE_CHECKING:
    from gpupool.core.cluster import NodeSpec
    from gpupool.sim.study import StudyResult, StudySpec
    from gpupool.sim.trace import TracePod

REPORT_AT = (90, 95, 100, 110, 130)


class Mode(StrEnum):
    fgd = "fgd"
    timed = "timed"


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit (code 2) to raise."""
    consoles()[1].print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def load_inputs(
    nodes: Path | None, pods: Path | None, synthetic_seed: int, scale: float
) -> tuple[list[NodeSpec], list[TracePod], str]:
    """Trace files when both are given, else the synthetic generator."""
    from gpupool.sim.synthetic import synthetic_cluster, synthetic_pods
    from gpupool.sim.trace import TraceError, load_nodes, load_pods

    if (nodes is None) != (pods is None):
        raise fail("give both --nodes and --pods, or neither (to use the synthetic trace)")
    if nodes is not None and pods is not None:
        try:
            return load_nodes(nodes), load_pods(pods), f"{pods.name} on {nodes.name}"
        except TraceError as exc:
            raise fail(str(exc)) from None
    if scale <= 0:
        raise fail(f"--scale must be positive, got {scale}")
    cluster = synthetic_cluster(synthetic_seed, scale)
    gpus = sum(len(n.gpus) for n in cluster)
    return cluster, synthetic_pods(synthetic_seed, cluster_gpus=gpus), "synthetic openb-like trace"


def sim(
    nodes: Path | None = typer.Option(
        None, "--nodes", metavar="FILE", help="Node list CSV (openb format)."
    ),
    pods: Path | None = typer.Option(
        None, "--pods", metavar="FILE", help="Pod list CSV (openb format)."
    ),
    policy: list[str] | None = typer.Option(
        None,
        "--policy",
        "-p",
        metavar="POLICY",
        autocompletion=completer((*POLICIES, *STUDY_VARIANTS)),
        help=f"Policy to compare (repeat). One of: {', '.join(POLICIES)}; for studies also "
        f"{', '.join(STUDY_VARIANTS)} (gpupool handed the file's workload / without its "
        "loss-system admission). Default: the six FGD-study policies and gpupool.",
    ),
    seed: list[int] | None = typer.Option(
        None, "--seed", "-s", metavar="SEED", help="Seed (repeat). Default 42."
    ),
    tune: float = typer.Option(
        1.3, metavar="X", help="Tune total GPU demand to this multiple of capacity."
    ),
    mode: Mode = typer.Option(Mode.fgd, help="fgd: FGD protocol; timed: trace times."),
    json_out: Path | None = typer.Option(
        None, "--json", metavar="FILE", help="Write the results as JSON."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", metavar="FILE", help="Write the Fig. 9(a)-style plot (PNG)."
    ),
    workers: int = typer.Option(0, metavar="N", help="Worker processes (0 = one per CPU)."),
    synthetic_seed: int = typer.Option(
        0, metavar="SEED", help="Seed of the synthetic trace (no files given)."
    ),
    scale: float = typer.Option(
        1.0, metavar="X", help="Size of the synthetic cluster (1.0 = 1,213 nodes)."
    ),
    speedup: float = typer.Option(
        1.0, metavar="X", help="Timed mode: arrivals this many times faster (lifetimes kept)."
    ),
    workload: Path | None = typer.Option(
        None, "--workload", metavar="FILE",
        help="Timed mode: a multi-team job workload CSV, replayed through the teams' queues "
        "(instead of --pods). Default policy there: gpupool.",
    ),
    queues: Path | None = typer.Option(
        None, "--queues", metavar="FILE",
        help="With --workload: the teams' queues (YAML). Default: equal quotas over the "
        "workload's teams, each may borrow the whole cluster.",
    ),
    order: Order | None = typer.Option(
        None, "--order", help="With --workload: queue order (default fairshare)."
    ),
    backfill: bool | None = typer.Option(
        None, "--backfill/--no-backfill",
        help="With --workload: let jobs start past a blocked one when they do not delay it "
        "(default on).",
    ),
    whole_gpus: bool = typer.Option(
        False, "--whole-gpus", help="With --workload: round GPU shares up to whole GPUs."
    ),
) -> None:
    """Replay a trace through the scheduling core and compare placement policies.

    Without --nodes/--pods it uses a built-in synthetic trace shaped after Alibaba's openb.
    With --mode timed --workload it replays a multi-team job workload and reports JCT, waits
    and fairness.
    """
    team = TeamArgs(workload, queues, order, backfill, whole_gpus, nodes, pods,
                    mode is Mode.timed, policy or [], seed or [], json_out, plot, speedup,
                    synthetic_seed, scale)
    if team.wanted:
        from gpupool.cli.team_sim_cmd import run_team_mode

        run_team_mode(team)
        return
    from gpupool.plugins import profiles  # the real names (choices.py copies them for help)
    from gpupool.sim.study import StudySpec

    policies = list(policy or (*FGD_STUDY_POLICIES, "gpupool"))
    for name in policies:
        if name not in profiles.POLICIES and name not in profiles.STUDY_VARIANTS:
            choices = ", ".join((*profiles.POLICIES, *profiles.STUDY_VARIANTS))
            raise fail(f"unknown policy {name!r}; choose from: {choices}")
    seeds = list(seed or [42])
    cluster, trace, label = load_inputs(nodes, pods, synthetic_seed, scale)
    if mode is Mode.timed:
        from gpupool.cli.timed_cmd import run_timed_mode

        run_timed_mode(cluster, trace, label, policies, seeds, json_out, plot, speedup)
        return
    spec = StudySpec(cluster, [p.request for p in trace], policies, seeds, tune)
    result = _run_with_progress(spec, workers)
    _print_table(result, label)
    out = consoles()[0]
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=1) + "\n")
        out.print(f"results written to {json_out}")
    if plot is not None:
        from gpupool.sim.plot import plot_unallocated

        curves = {p: r.per_seed("unallocated_gpu_pct") for p, r in result.policies.items()}
        plot_unallocated(curves, plot, f"Unallocated GPUs — {label}", (70, 130))
        out.print(f"plot written to {plot}")


def _run_with_progress(spec: StudySpec, workers: int) -> StudyResult:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from gpupool.sim.study import run_study

    total = len(spec.policies) * len(spec.seeds)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=consoles()[1], transient=True) as progress:
        task = progress.add_task("simulating runs", total=total)
        return run_study(spec, workers or None, lambda _: progress.advance(task))


def _print_table(result: StudyResult, label: str) -> None:
    import numpy as np
    from rich.table import Table

    meta = result.spec_meta
    table = Table(
        title=(
            f"{label}: {meta['nodes']} nodes, {meta['gpus']} GPUs, {meta['tasks']} tasks, "
            f"tune {meta['tune']}, seeds {', '.join(map(str, meta['seeds']))}"
        ),
        caption="unallocated GPU % at arrived x % of capacity (mean over seeds); frag % at 100",
    )
    table.add_column("policy", no_wrap=True)
    for x in REPORT_AT:
        table.add_column(f"x={x}", justify="right")
    table.add_column("frag%", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("dec/s", justify="right")
    for name, res in result.policies.items():
        unalloc = res.mean("unallocated_gpu_pct")
        frag = res.mean("frag_pct")
        table.add_row(
            name,
            *(_pct(unalloc[x]) for x in REPORT_AT),
            _pct(frag[100]),
            f"{np.mean([r.failed for r in res.runs]):.0f}",
            f"{res.decisions_per_second:,.0f}",
        )
    consoles()[0].print(table)


def _pct(value: float) -> str:
    return "–" if value != value else f"{value:.2f}"  # NaN: no value at that point
