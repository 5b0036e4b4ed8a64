"""Notebook benchmark: a real `gpupool up` (fake GPUs, SQLite, jobs sandboxed as their owners'
accounts when bubblewrap exists) starting real JupyterLab servers, measured from outside as a
user sees them:

1. one notebook, submit -> usable: from its POST /jobs to the first 200 of
   ``<url>/api/status`` through the gateway (and when ``url`` appeared in the API);
2. a class: many notebooks at 1/8 GPU submitted at once by as many users of one team; when
   each and all answer through the gateway, where they were placed, and the memory the server,
   the notebooks and the machine use;
3. the gateway's added latency: a small GET and a kernel round trip (``1`` executed over the
   kernel WebSocket) through the gateway vs straight to Jupyter with its secret.

Writes bench/results/notebooks.md and bench/results/notebooks.json.

    sudo .venv/bin/python bench/notebook_bench.py            # full: ~2.5 min on 2 cores
    sudo .venv/bin/python bench/notebook_bench.py --quick    # 3 single starts, a class of 8

Every server, notebook and Unix account the run made is removed at the end, also after a
failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from _common import RESULTS, machine, speed_probe
from notebook_bench_class import measure_class
from notebook_bench_measure import measure_overhead, measure_singles
from notebook_bench_report import render
from notebook_bench_server import Bench

FULL = {"singles": 8, "class_size": 32, "fake_gpus": "4xA100-80GB", "http_requests": 300,
        "kernel_round_trips": 200}
QUICK = {"singles": 3, "class_size": 8, "fake_gpus": "1xA100-80GB", "http_requests": 300,
         "kernel_round_trips": 200}


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so that the clean-up runs as for Ctrl-C."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def run(quick: bool, progress: Progress) -> dict[str, Any]:
    config = QUICK if quick else FULL
    started = time.perf_counter()
    data: dict[str, Any] = {"date": date.today().isoformat(), "quick": quick,
                            "machine": machine(), "config": config,
                            "fake_gpus": config["fake_gpus"], "notes": []}
    data["versions"] = {name: metadata.version(name)
                        for name in ("jupyterlab", "jupyter_server", "ipykernel")}
    data["load_before"] = os.getloadavg()[0]
    data["probe_ms_before"] = speed_probe()
    bench = Bench(str(config["fake_gpus"]), progress)
    data["sandbox"] = bench.sandbox
    if bench.sandbox == "none":
        data["notes"].append("bubblewrap (bwrap) is not installed: notebooks ran without a "
                             "sandbox (GPUPOOL_SANDBOX=none), as their owners' accounts.")
    try:
        task = progress.add_task("starting gpupool up", total=None)
        bench.start()
        progress.update(task, description="gpupool up started", total=1, completed=1)
        data["single"] = measure_singles(bench, int(config["singles"]))
        data["isolation"] = data["single"]["cold"]["isolation"]
        data["overhead"] = measure_overhead(bench, int(config["http_requests"]),
                                            int(config["kernel_round_trips"]))
        gpus = int(str(config["fake_gpus"]).split("x", 1)[0])
        data["class"] = measure_class(bench, int(config["class_size"]), gpus)
    finally:
        task = progress.add_task("cleaning up (server, notebooks, accounts)", total=None)
        bench.close()
        progress.update(task, total=1, completed=1)
    data["load_after"] = os.getloadavg()[0]
    data["probe_ms_after"] = speed_probe()
    data["duration_s"] = time.perf_counter() - started
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 single starts and a class of 8 on 1 GPU (~1.5 min)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite notebooks.md from the notebooks.json in --out")
    args = parser.parse_args(argv)
    if args.render_only:
        data = json.loads((args.out / "notebooks.json").read_text())
        (args.out / "notebooks.md").write_text(render(data))
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: notebooks run as their owners' Unix accounts, which "
                         "the server creates")
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with interrupted_by_signals(), Progress(*columns, console=console) as progress:
            data = run(args.quick, progress)
    except KeyboardInterrupt as stop:
        console.print(f"interrupted ({stop or 'Ctrl-C'}): cleaned up, nothing written")
        raise SystemExit(130) from None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "notebooks.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / "notebooks.md").write_text(render(data))
    print(render(data))
    print(f"wrote {args.out / 'notebooks.md'} and notebooks.json; the run took "
          f"{data['duration_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
