"""Launch pacing of the GPU-sharing interposer, measured on the stand-in driver.

The stand-in libcuda of the tests keeps the launching thread busy for STANDIN_KERNEL_US per
kernel (a launch is synchronous there), and the probe launches in a loop for a given time and
prints how many launches it made. Each configuration's launch rate is the median over the
repeats; its ratio to the free rate of the same kind of launch is what pacing should hold to
the compute share (0.25 for a quarter of a GPU, 1.0 for a whole one). These measurements used
to be timing asserts in tests/test_interposer.py; the tests now check the pacing clock the
interposer keeps in the share file, and this benchmark reports the wall-clock effect. Writes
bench/results/interposer_pacing.md. A benchmark reports; no test asserts on these figures.

    .venv/bin/python bench/interposer_pacing_bench.py [--seconds 0.6] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _common import RESULTS, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "interposer"))
from standin import Tools, build_tools

from gpupool.interposer import sharefile

KERNEL_US = 100  # what one stand-in kernel keeps the launcher busy, and the launch cost charged
GRAPH_NODES, NODE_US = 4, 50  # a graph of 4 kernels of 50 µs each, charged per node


@dataclass(frozen=True)
class Config:
    label: str
    kind: str  # "launch" or "graph"
    env: dict[str, str] = field(default_factory=dict)
    expected: float = 1.0  # the ratio to the free rate of the same kind that pacing aims at
    preload: bool = True
    processes: int = 1
    share_file: bool = False
    baseline: bool = False  # the free rate its kind's ratios are taken to


LAUNCH = {"STANDIN_KERNEL_US": str(KERNEL_US)}
GRAPH = {"STANDIN_KERNEL_US": str(NODE_US)}
PACED = {"GPUPOOL_LAUNCH_COST_US": str(KERNEL_US)}

CONFIGS = (
    Config("free (interposer, no share)", "launch", LAUNCH, baseline=True),
    Config("bare stand-in (no interposer)", "launch", LAUNCH, preload=False),
    Config("paced, GPUPOOL_GPU_FRACTION=0.25", "launch",
           {**LAUNCH, **PACED, "GPUPOOL_GPU_FRACTION": "0.25"}, 0.25),
    Config("paced, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25", "launch",
           {**LAUNCH, **PACED, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25"}, 0.25),
    Config("two processes, one share file, fraction 0.25 (sum)", "launch",
           {**LAUNCH, **PACED, "GPUPOOL_GPU_FRACTION": "0.25"}, 0.25, processes=2,
           share_file=True),
    Config("whole GPU, GPUPOOL_GPU_FRACTION=1", "launch",
           {**LAUNCH, "GPUPOOL_GPU_FRACTION": "1"}, 1.0),
    Config(f"graph launches of {GRAPH_NODES} nodes, free", "graph", GRAPH, baseline=True),
    Config(f"graph launches of {GRAPH_NODES} nodes, fraction 0.25 (paced per node)", "graph",
           {**GRAPH, "GPUPOOL_GPU_FRACTION": "0.25", "GPUPOOL_LAUNCH_COST_US": str(NODE_US)},
           0.25),
)


def rate(line: list[str]) -> float:
    """Launches per second from a probe's "launch|graph rc count seconds" line."""
    if line[1] != "0":
        raise RuntimeError(f"the probe failed: {line}")
    return int(line[2]) / float(line[3])


def run_once(tools: Tools, config: Config, seconds: float, tmp: Path) -> float:
    """One run's launch rate: the sum over the configuration's processes, run together."""
    args = ["launch", str(seconds)] if config.kind == "launch" else \
        ["graph", str(GRAPH_NODES), str(seconds)]
    env = tools.env(config.env, preload=config.preload)
    if config.share_file:
        env["GPUPOOL_SHARE_FILE"] = str(sharefile.create(tmp / "job.share"))
    procs = [subprocess.Popen([str(tools.probe), *args], env=env, text=True,
                              stdout=subprocess.PIPE) for _ in range(config.processes)]
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=60 + seconds)
        if proc.returncode != 0:
            raise RuntimeError(f"probe {args} exited {proc.returncode}")
        total += rate(out.split())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.6, help="length of one run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "interposer_pacing.md"))
    args = parser.parse_args()
    runs: list[list[float]] = [[] for _ in CONFIGS]
    with tempfile.TemporaryDirectory(prefix="gpushare-pacing-") as tmp:
        tools = build_tools(Path(tmp))
        for _ in range(args.repeats):  # round-robin: a spell of load hits every configuration
            for i, config in enumerate(CONFIGS):
                runs[i].append(run_once(tools, config, args.seconds, Path(tmp)))
    load = os.getloadavg()[0]
    rows = []
    free = {c.kind: statistics.median(r) for c, r in zip(CONFIGS, runs, strict=True)
            if c.baseline}
    for config, measured in zip(CONFIGS, runs, strict=True):
        median = statistics.median(measured)
        ratio = median / free[config.kind]
        spread = (min(measured) / free[config.kind], max(measured) / free[config.kind])
        rows.append((config, median, ratio, spread))
        print(f"{config.label:70} {median:9.0f}/s  ratio {ratio:5.2f}  "
              f"(expected {config.expected:.2f})")
    Path(args.out).write_text(render(rows, args, load))
    print(f"wrote {args.out}")


def render(rows: list[tuple[Config, float, float, tuple[float, float]]],
           args: argparse.Namespace, load: float) -> str:
    lines = [
        "# Interposer launch pacing",
        "",
        "Generated by `bench/interposer_pacing_bench.py`: the stand-in libcuda of the tests,",
        f"whose kernels keep the launching thread busy ({KERNEL_US} µs per kernel; {NODE_US} µs",
        f"per node of a {GRAPH_NODES}-node graph), driven by the probe program, which launches",
        f"in a loop for {args.seconds} s and counts. Paced runs charge each launch its kernel's",
        "time (`GPUPOOL_LAUNCH_COST_US`), so at share s a launch reserves cost / s of the",
        "device's pacing clock and the rate should be s times the free one. The rate is the",
        f"median of {args.repeats} runs (configurations taken in turn); the ratio is to the",
        "free rate of the same kind of launch (kernel launches: the interposer without a share;",
        "graphs: graph launches without a share), with the range over the runs.",
        "",
        f"Machine: {machine()}; load average {load:.2f} when the runs ended.",
        "",
        "| configuration | launches/s | ratio to free | range over runs | expected ratio |",
        "|---|---|---|---|---|",
    ]
    for config, median, ratio, (low, high) in rows:
        lines.append(f"| {config.label} | {median:,.0f} | {ratio:.2f} | {low:.2f}–{high:.2f} | "
                     f"{config.expected:.2f} |")
    lines += [
        "",
        "Paced rates sit a little above the share: the default burst (`GPUPOOL_LAUNCH_BURST_US`,",
        "10 ms) lets a run's first launches go ahead of the pace, 10 ms / 400 µs = 25 launches",
        f"(graphs: 10 ms / 800 µs = 12.5) more per {args.seconds} s run, which is +0.01 on the",
        "ratio here and vanishes in longer runs.",
        "",
        "Two processes on a machine with two CPUs each have a core for their stand-in kernels,",
        "so free they could launch up to twice the rate of one; on one share file they advance one",
        "pacing clock and their sum is held to the share. A graph launch is charged one launch",
        "cost per node of the graph it was instantiated from. With a whole GPU (or no share)",
        "the interposer does not pace at all.",
        "",
        "What the tests check instead (tests/test_interposer.py, without wall time): the",
        "pacing clock in the share file advances by exactly cost / share per launch (per node",
        "for graphs, summed over a job's processes, not at all for a whole GPU), and a launch",
        "waits when the clock is more than the burst ahead of now.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
