"""CLI start-up benchmark (issue 15, item 6): wall and CPU time of `gpupool --help`,
`gpupool --version` and `gpupool ps` against a real `gpupool up` (SQLite, fake GPU) holding
~10 and then 10,000 jobs, plus where the import time of what remains goes. Jobs are
submitted to a team without quota, so none runs. Writes bench/results/cli.json (one entry
per label) and bench/results/cli.md (every label in it).

    git -C . archive HEAD | tar -x -C /tmp/cli-before      # the code before, once
    .venv/bin/python bench/cli_bench.py --label before --src /tmp/cli-before/src
    .venv/bin/python bench/cli_bench.py --label after

The client and the server of a label both run the label's code (``--src`` on PYTHONPATH,
else this checkout), with this venv's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, parked_token, speed_probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server_harness import Server, make_server

GPUPOOL = str(Path(sys.executable).parent / "gpupool")  # the installed entry point
JSON = RESULTS / "cli.json"
MD = RESULTS / "cli.md"
TOP = {"after": 25}
"""How many packages each import table shows (default 12)."""
NOTES = """
## What changed, and what remains

Round 1 (its "after" row was 83, 76, 319 and 502 ms): every command imported every command
module, and so the simulator (numpy, matplotlib) and all of the client; `ps` also printed up
to 1,000 rows. Since then: commands are imported only when used (`cli/lazy.py`; `--help` lists
them from a table and imports Typer alone), help is plain text (no rich), a `gpupool` process
skips httpx's own command-line tool and pydantic's plugin scan (`cli/lean.py`), `ps` shows 200
jobs by default, paged on the server, and the SDK builds no TLS context for an `http://`
server and imports `sdk/pipelines.py` and `sdk/async_client.py` on first use only.

Round 2 (the "after" row above): measured first, `ps` spent its time in imports (pydantic and
the schemas' models, ~70 ms; httpx, httpcore and h11, ~50 ms), in Typer building a pydantic
TypeAdapter for each option it parsed, in laying out 200 rows with a rich Table (~100 ms) and,
on the server, in SQLite sorting 10,000 whole rows (~30 ms). Now:

- the table is drawn from the server's JSON objects (`sdk/raw.py`, `cli/job_cells.py`,
  `cli/ps_table.py`): no model is built on the client, and the rows are laid out as rich lays
  out that Table (same characters, colours, cuts; `tests/test_ps_fast.py` compares both at
  widths from 8 to 250 columns, piped and in three colour systems), not by it: ~5 ms for 200
  rows; `--json` still prints the validated models, and rows that are not plain ASCII (or
  `--wide`) are still drawn by the rich Table;
- `ps` imports neither pydantic nor `gpupool.schemas` nor rich's Table: Typer 0.2x builds a
  pydantic TypeAdapter for every option it parses, even an unset `--install-completion`;
  `cli/lean.py` (`lean_options`) takes plain `str`, `int` and `bool` values as Typer would
  and leaves every other value to Typer (same values, same errors: tested);
- a plain `http://` server is asked through the standard library's `http.client`
  (`sdk/_plain.py`: a 2xx answer is read there; any other answer or failure is sent again
  through httpx, whose answer or error is the one shown), so `ps` imports neither httpx,
  httpcore nor h11 (~40-80 ms). An earlier version spoke HTTP over a raw socket to save the
  ~10-25 ms of `http.client` too; it was dropped: it hand-wrote what the standard library
  does;
- the server's listing chooses a page's ids from the ids alone before reading those rows
  (`server/services/jobs.py`): SQLite used the phase index and sorted all 10,000 matching
  rows, specs included, for the 201 it returned (~30 ms, now ~1 ms).

Not changed, measured: the server validates each row's stored spec into a JobView and
FastAPI serialises the page with pydantic's core (~4 ms and 0.7 ms for 200 rows): a
hand-written serialiser would save little and have to follow every field another change
adds to JobView.

What remains, on this machine: Python itself (~20 ms), Typer (~45 ms with the standard
modules it needs: inspect, ast, pathlib, enum), rich's Console (~35 ms: styles, themes,
markup), the process's own modules (~15 ms), one request (~5 ms with 10 jobs; ~25 ms for a page
of 200 of 10,000 on the server) and the table (~5 ms). The machine's speed varied over the
day by up to 1.9 times (see the speed probe, and `--help`, whose code did not change since
round 1: 83 ms then; 134 ms in round 2's first run, 77 ms in this one): each "after" line
under the table gives the speed probe and the load around the run.

`ps -n 0` (every one of 10,000 jobs: ten pages of 1,000) is bound by the server (~150-200 ms
a page: reading, validating and serialising 1,000 rows), not by the CLI (~0.8 s of CPU).
"""
"""Written by hand when the figures were taken (what they show, what remains)."""
GOALS = {"help": 250, "version": 250, "ps_10": 250, "ps_10k": 300}
LABELS = {
    "help": "`gpupool --help`",
    "version": "`gpupool --version`",
    "ps_10": "`gpupool ps`, 10 jobs",
    "ps_10k": "`gpupool ps`, 10,000 jobs",
    "ps_10k_all": "`gpupool ps -n 0`, all 10,000 jobs",
}


def timed(argv: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    """Median wall and CPU (user+sys) ms of ``runs`` runs of ``argv`` after one warm-up;
    the exit code must be 0."""
    samples, cpu = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        wall = (time.perf_counter() - t0) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert done.returncode == 0, (argv, done.stdout[-500:], done.stderr[-2000:])
        if i:  # the first run compiles and warms the page cache
            samples.append(wall)
            cpu.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                       * 1000)
    return {"argv": argv[1:], "wall_ms": statistics.median(samples),
            "wall_min_ms": min(samples), "cpu_ms": statistics.median(cpu), "runs": runs,
            "lines_out": len(done.stdout.splitlines())}


def import_breakdown(argv: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    """Median self import time (ms) per package (``gpupool.X`` counted per subpackage) of
    ``python -X importtime`` running the CLI with ``argv``."""
    code = "import sys; from gpupool.cli.main import app; sys.argv[0] = 'gpupool'; app()"
    per_run: list[dict[str, float]] = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv], env=env,
                              capture_output=True, text=True, timeout=120)
        totals: dict[str, float] = {}
        for line in done.stderr.splitlines():
            fields = line.removeprefix("import time:").split("|")
            if not line.startswith("import time:") or not fields[0].strip().isdigit():
                continue  # another line, or the header
            self_us, name = int(fields[0]), fields[2].strip()
            parts = name.split(".")
            key = ".".join(parts[:2]) if parts[0] == "gpupool" else parts[0]
            totals[key] = totals.get(key, 0.0) + self_us / 1000
        per_run.append(totals)
    keys = {k for run in per_run for k in run}
    return {k: statistics.median(run.get(k, 0.0) for run in per_run) for k in keys}


def submit_parked(server: Server, token: str, count: int, threads: int = 4) -> None:
    """Queue ``count`` jobs as the parked user (they wait: their team has no quota)."""
    left = iter(range(count))
    lock = threading.Lock()

    def submitter() -> None:
        with server.client(token) as c:
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                r = c.post("/jobs", json={"command": ["true"], "gpus": 1})
                assert r.status_code == 201, r.text

    workers = [threading.Thread(target=submitter) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def measure(label: str, src: str | None, runs: int, jobs: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("GPUPOOL_URL", None)
    env.pop("GPUPOOL_TOKEN", None)
    if src:
        env["PYTHONPATH"] = src
        os.environ["PYTHONPATH"] = src  # the server of this label runs the same code
    else:
        os.environ.pop("PYTHONPATH", None)
    result: dict[str, Any] = {"label": label, "src": src or "this checkout",
                              "machine": machine(), "runs": runs}
    result["load_before"] = os.getloadavg()[0]
    result["probe_ms_before"] = speed_probe()
    new_cli = subprocess.run([GPUPOOL, "--version"], env=env, capture_output=True,
                             timeout=60).returncode == 0
    times: dict[str, Any] = {"help": timed([GPUPOOL, "--help"], env, runs)}
    times["version"] = timed([GPUPOOL, "--version" if new_cli else "version"], env, runs)
    with tempfile.TemporaryDirectory() as tmp:
        gen = make_server("sqlite", Path(tmp), "1xA100-80GB")
        server = next(gen)
        try:
            token = parked_token(server)
            client_env = {**server.env, **({"PYTHONPATH": src} if src else {})}
            submit_parked(server, token, 10)
            times["ps_10"] = timed([GPUPOOL, "ps"], client_env, runs)
            submit_parked(server, token, jobs - 10)
            times["ps_10k"] = timed([GPUPOOL, "ps"], client_env, runs)
            if new_cli:
                times["ps_10k_all"] = timed([GPUPOOL, "ps", "-n", "0"], client_env,
                                            max(3, runs // 3))
            result["imports_ps"] = import_breakdown(["ps"], client_env, 5)
        finally:
            for _ in gen:
                pass
    result["imports_help"] = import_breakdown(["--help"], env, 5)
    result["times"] = times
    result["load_after"] = os.getloadavg()[0]
    result["probe_ms_after"] = speed_probe()
    return result


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def write_markdown(results: dict[str, Any]) -> None:
    labels = [lbl for lbl in ("before", "after") if lbl in results] + sorted(
        set(results) - {"before", "after"})
    first = results[labels[0]]
    lines = [
        "# CLI start-up",
        "",
        "Generated by `bench/cli_bench.py`. Each figure is the median of "
        f"{first['runs']} runs (after one warm-up) of the installed `gpupool` entry point, "
        "wall clock and CPU (user + system) of the process, on this machine "
        f"({first['machine']}). `ps` runs against a real `gpupool up` on SQLite holding ~10, "
        "then 10,000 jobs (pending, in a team without quota), as the local admin (who sees "
        "them all); it shows the active jobs. Goal (issue 15, item 6): `--help` and `ps` "
        "≤ 250 ms, `ps` with 10,000 jobs ≤ 300 ms.",
        "",
        "| command | goal (ms) | " + " | ".join(
            f"{lbl} wall (ms) | {lbl} CPU (ms)" for lbl in labels) + " |",
        "|---|---|" + "---|---|" * len(labels),
    ]
    for key, text in LABELS.items():
        row = [text, _ms(GOALS.get(key))]
        for lbl in labels:
            t = results[lbl]["times"].get(key)
            row += [_ms(t["wall_ms"]) if t else "–", _ms(t["cpu_ms"]) if t else "–"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [""]
    for lbl in labels:
        r = results[lbl]
        ps = r["times"]["ps_10k"]
        probe = (f"; speed probe (a 1,000,000-step Python loop) {r['probe_ms_before']:.0f} ms "
                 f"before, {r['probe_ms_after']:.0f} ms after" if "probe_ms_before" in r else "")
        lines.append(f"- {lbl}: code from {r['src']}; load average {r['load_before']:.2f} "
                     f"before, {r['load_after']:.2f} after{probe}; `gpupool ps` with 10,000 "
                     f"jobs printed {ps['lines_out']:,} lines; `--version` ran as "
                     f"`gpupool {' '.join(r['times']['version']['argv'])}`.")
    for lbl in reversed(labels):  # what remains first
        r = results[lbl]
        for what in ("help", "ps"):
            imports = r[f"imports_{what}"]
            total = sum(imports.values())
            ranked = sorted(((v, k) for k, v in imports.items()), reverse=True)
            shown = ranked[:TOP.get(lbl, 12)]
            rest = ranked[len(shown):]
            lines += [
                "",
                f"## Import time, {lbl}: `gpupool {'--help' if what == 'help' else 'ps'}`",
                "",
                f"`python -X importtime`, self time summed per package (`gpupool.X` per "
                f"subpackage), median of 5 runs: {total:,.0f} ms in all.",
                "",
                "| package | ms |",
                "|---|---|",
                *(f"| {k} | {v:,.1f} |" for v, k in shown),
            ]
            if rest:
                lines.append(f"| {len(rest)} others | {sum(v for v, _ in rest):,.1f} |")
    if NOTES:
        lines += ["", NOTES.strip()]
    MD.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--src", default=None, help="the src dir of the code to measure")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--markdown-only", action="store_true",
                        help="only rewrite cli.md from cli.json")
    args = parser.parse_args()
    results = json.loads(JSON.read_text()) if JSON.exists() else {}
    if not args.markdown_only:
        results[args.label] = measure(args.label, args.src, args.runs, args.jobs)
        JSON.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)
    print(MD.read_text())


if __name__ == "__main__":
    main()
