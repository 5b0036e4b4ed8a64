"""``gpupool sim --mode timed --workload FILE``: replay a multi-team job workload through the
team engine (``gpupool.sim.team_timed``) and report JCT, waits, allocation and fairness.

``sim_cmd.sim`` owns the options and hands them here when ``--workload`` (or an option that
only goes with it) is given. Nothing heavy is imported to build the command: the simulator,
numpy and rich come in when a run starts, the engine last (so a missing engine is one clear
error after the inputs were checked).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from gpupool.cli.timed_cmd import consoles

if TYPE_CHECKING:
    from gpupool.core.cluster import NodeSpec
    from gpupool.sim.workload import TeamQueue, WorkloadJob


class Order(StrEnum):
    fifo = "fifo"
    fairshare = "fairshare"


@dataclass(frozen=True)
class TeamArgs:
    """The ``gpupool sim`` options the team path reads (None: not given)."""

    workload: Path | None
    queues: Path | None
    order: Order | None
    backfill: bool | None
    whole_gpus: bool
    nodes: Path | None
    pods: Path | None
    timed: bool
    policies: Sequence[str]
    seeds: Sequence[int]
    json_out: Path | None
    plot: Path | None
    speedup: float
    synthetic_seed: int
    scale: float

    @property
    def wanted(self) -> bool:
        """Whether the team path was asked for (``--workload`` or one of its options)."""
        return (self.workload is not None or self.queues is not None or self.order is not None
                or self.backfill is not None or self.whole_gpus)


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit (code 2) to raise."""
    consoles()[1].print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def run_team_mode(args: TeamArgs) -> None:
    """Check the options, load nodes, workload and queues, run every (policy, seed) through
    ``run_team_timed``, print the table and write the JSON (``{"meta", "runs"}``, one run per
    (policy, seed): ``policy, order, backfill, whole_gpus, seed`` and ``team_metrics``).
    Every user error ends with one line on stderr and exit code 2."""
    workload = _check(args)
    policies = list(args.policies or ["gpupool"])
    seeds = list(args.seeds or [42])
    order = (args.order or Order.fairshare).value
    backfill = True if args.backfill is None else args.backfill
    nodes, label = _nodes(args)
    jobs, teams = _inputs(workload, args.queues, nodes)
    capacity = float(sum(len(n.gpus) for n in nodes))
    try:
        from gpupool.sim.team_timed import run_team_timed
    except ImportError as exc:
        raise fail(f"the team engine (gpupool.sim.team_timed) is missing from this build: {exc}"
                   ) from None
    from gpupool.sim.team_metrics import team_metrics

    runs: list[dict[str, Any]] = []
    seconds: list[float] = []
    with _progress(len(policies) * len(seeds)) as advance:
        for policy in policies:
            for seed in seeds:
                try:
                    run = run_team_timed(nodes, jobs, teams, policy, order=order,
                                         backfill=backfill, whole_gpus=args.whole_gpus,
                                         seed=seed)
                    metrics = team_metrics(run.records, teams, capacity)
                except ValueError as exc:
                    raise fail(str(exc)) from None
                runs.append({"policy": policy, "order": order, "backfill": backfill,
                             "whole_gpus": args.whole_gpus, "seed": seed, **metrics})
                seconds.append(run.seconds)
                advance()
    title = (f"{workload.name} on {label}: {len(jobs)} jobs, {len(teams)} teams, "
             f"{capacity:g} GPUs; {order}, backfill {'on' if backfill else 'off'}"
             + (", whole GPUs" if args.whole_gpus else ""))
    _print_table(title, runs, seconds)
    if args.json_out is not None:
        meta = {"mode": "timed", "workload": workload.name, "nodes": label,
                "queues": args.queues.name if args.queues else None, "jobs": len(jobs),
                "teams": [t.name for t in teams], "capacity_gpus": capacity}
        args.json_out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
        consoles()[0].print(f"results written to {args.json_out}")


def _check(args: TeamArgs) -> Path:
    """The workload path, after the option checks of the team path."""
    from gpupool.plugins import profiles

    if args.workload is None:
        raise fail("--queues, --order, --backfill/--no-backfill and --whole-gpus go with "
                   "--workload FILE (and --mode timed)")
    if not args.timed:
        raise fail("--workload replays jobs on their own clock: add --mode timed")
    if args.pods is not None:
        raise fail("give --workload or --pods, not both")
    if args.plot is not None:
        raise fail("--plot is not drawn for --workload runs; use --json")
    if args.speedup != 1.0:
        raise fail("--speedup applies to --pods traces, not to --workload")
    for name in args.policies:
        if name not in profiles.POLICIES:
            raise fail(f"unknown policy {name!r}; choose from: {', '.join(profiles.POLICIES)}")
    return args.workload


def _nodes(args: TeamArgs) -> tuple[list[NodeSpec], str]:
    from gpupool.sim.synthetic import synthetic_cluster
    from gpupool.sim.trace import TraceError, load_nodes

    if args.nodes is not None:
        try:
            return load_nodes(args.nodes), args.nodes.name
        except TraceError as exc:
            raise fail(str(exc)) from None
    if args.scale <= 0:
        raise fail(f"--scale must be positive, got {args.scale}")
    return synthetic_cluster(args.synthetic_seed, args.scale), "the synthetic openb-like cluster"


def _inputs(workload: Path, queues: Path | None, nodes: Sequence[NodeSpec]
            ) -> tuple[list[WorkloadJob], list[TeamQueue]]:
    """The jobs, and the queues of ``queues`` or (None) equal quotas over the workload's
    teams in order of first submission, each allowed to borrow the whole cluster."""
    from gpupool.sim.workload import TeamQueue, load_queues, load_workload

    try:
        jobs = load_workload(workload)
        teams = load_queues(queues) if queues is not None else []
    except ValueError as exc:
        raise fail(str(exc)) from None
    gpus = float(sum(len(n.gpus) for n in nodes))
    if not gpus:
        raise fail("the cluster has no GPUs")
    if queues is None:
        names = list(dict.fromkeys(j.team for j in jobs))
        teams = [TeamQueue(n, gpus / len(names), gpus) for n in names]
    known = {t.name for t in teams}
    for job in jobs:
        if job.team not in known:
            raise fail(f"{workload}: job {job.job_id!r} is of team {job.team!r}, which has no "
                       f"queue in {queues}; add it there")
    return jobs, teams


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A transient progress bar on stderr; gives the function that advances it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=consoles()[1], transient=True) as bar:
        task = bar.add_task("simulating runs", total=total)
        yield lambda: bar.advance(task)


def _print_table(title: str, runs: Sequence[dict[str, Any]], seconds: Sequence[float]) -> None:
    from rich import box
    from rich.table import Table

    rows = [[run["policy"], str(run["seed"]),
             *(f"{run[k]:,.0f}" for k in ("jct_mean_s", "wait_p95_s", "wait_max_s")),
             f"{run['gpu_alloc_pct']:.1f}", f"{run['jain_fairness']:.3f}",
             str(run["preemptions"]), str(run["never_started"])] for run in runs]
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True,
                  caption="JCT (mean), wait95 (p95), waitmax: seconds of simulated time; Jain: "
                  "over the time every team had work waiting, 1 = split by weight; never: jobs "
                  f"never started; {sum(seconds):.1f} s of wall time; more in --json")
    names = ("policy", "seed", "JCT", "wait95", "waitmax", "alloc%", "Jain", "preempt",
             "never")
    for i, name in enumerate(names):
        # numbers are never cut: the headers wrap instead
        table.add_column(name, justify="left" if i == 0 else "right",
                         min_width=max(len(r[i]) for r in rows))
    for row in rows:
        table.add_row(*row)
    consoles()[0].print(table)
