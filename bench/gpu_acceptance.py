"""The GPU acceptance run (issue 21): everything only a real GPU can show, in one command of
at most about 5 minutes on one GPU, against real ``gpupool up`` servers on this machine.

Sections (bench/gpu_sections.py, in this order): discovery, interposer, overhead, mps,
sharing, mig, notebooks, services, metrics, images. Each runs in its own process with its own
time limit: a hung section is killed (its servers and jobs with it), recorded as "timed out
after N s", and the run goes on; a section that cannot run here (no torch or CUDA, no MPS
daemon binary, no card in MIG mode, no container runtime, a module not written yet) is
recorded as skipped with the reason, never as passed. ``gpu.md`` and ``gpu.json`` are
rewritten after every section, so a run cut short keeps what it finished.

    python bench/gpu_acceptance.py [--only SECTION ...] [--fake-gpus 1xH200-141GB]
                                   [--out DIR] [--budget S] [--timeout SECTION=S ...]

``--fake-gpus`` is a dry run: the servers declare fake GPUs, the torch parts are skipped where
torch or CUDA is missing, and everything else (server start, submission, placement, reading
back, the report) really runs. The exit status is 0 unless a section failed, broke or timed
out.

On the GPU machine (Python 3.12 with PyTorch, no package registry): gpupool's own
dependencies travel as wheels in ``.whl/`` (made here by ``scripts/gpu_wheels.sh``, under
64 MiB with the working tree), installed there into a throwaway venv that also sees the
machine's own packages (torch), and the results are written under ``$OUT``:

    run(carry=[".whl"], timeout_s=600, command=
        "bash scripts/gpu_wheels.sh install /tmp/gv && PYTHONUNBUFFERED=1 "
        "/tmp/gv/bin/python bench/gpu_acceptance.py --out $OUT --budget 500")

The interposer is C: the servers compile it with the machine's C compiler at start
(gpupool.interposer.build); without one, the interposer and overhead sections are skipped
with the build's reason and the servers say "GPU shares NOT enforced".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS, machine
from gpu_report import record, today, write
from gpu_sections import PATH_ENV, SECTIONS, Section, by_name

BENCH = Path(__file__).resolve().parent
WORKER = BENCH / "gpu_sections.py"
GRACE_S = 25.0
"""After SIGTERM, how long a timed-out section gets to stop its servers before SIGKILL."""
DEFAULT_BUDGET_S = 540.0
FAILING = ("failed", "error", "timed out")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = [s.name for s in SECTIONS]
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=names, metavar="SECTION",
                        help=f"run only these sections (of: {', '.join(names)})")
    parser.add_argument("--fake-gpus", default="",
                        help="a dry run on fake GPUs, e.g. 1xH200-141GB; default: the real ones")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="where gpu.md and gpu.json go (default bench/results)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds for the whole run; a section that would start after "
                        f"it is spent is skipped (default {DEFAULT_BUDGET_S:g})")
    parser.add_argument("--timeout", action="append", default=[], metavar="SECTION=SECONDS",
                        help="another time limit for one section (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    args = parser.parse_args(argv)
    args.timeouts = {}
    for item in args.timeout:
        name, sep, seconds = item.partition("=")
        try:
            if not sep or name not in names or float(seconds) <= 0:
                raise ValueError
        except ValueError:
            parser.error(f"--timeout {item!r}: write SECTION=SECONDS, SECTION one of "
                         f"{', '.join(names)}")
        args.timeouts[name] = float(seconds)
    return args


def plan(args: argparse.Namespace) -> list[Section]:
    """The sections to run, in order, with their time limits."""
    chosen = by_name(args.only) if args.only else list(SECTIONS)
    return [replace(s, timeout_s=args.timeouts.get(s.name, s.timeout_s)) for s in chosen]


def sweep(tmp: Path, timed_out_since: float | None = None) -> None:
    """Kill what a section left: job processes (they outlive a server by design) of the
    servers whose data dirs are under ``tmp``, and, after a timeout (``timed_out_since``:
    the section's start, time.time()), the MPS control daemons started since then in the
    servers' work dirs (/tmp/gpw*; a server stopped in time quits its own)."""
    sys.path.insert(0, str(BENCH.parent / "tests"))
    from server_harness import kill_leftover_jobs

    for home in {h.parents[3] for h in tmp.rglob("runs/*/*/handle.json")}:
        kill_leftover_jobs(home)
    control = os.environ.get("GPUPOOL_MPS_CONTROL") or shutil.which("nvidia-cuda-mps-control")
    if timed_out_since is None or not control:
        return
    for pid_file in Path("/tmp").glob("gpw*/mps/gpu*/pipe/nvidia-cuda-mps-control.pid"):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if pid_file.stat().st_mtime < timed_out_since:
                continue
            env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(pid_file.parent),
                   "CUDA_MPS_LOG_DIRECTORY": str(pid_file.parent.parent / "log")}
            subprocess.run([control], input="quit\n", env=env, text=True, timeout=30,
                           capture_output=True, check=False)


def run_one(section: Section, fake_gpus: str, timeout_s: float,
            extra_path: Sequence[str] = ()) -> dict[str, Any]:
    """Run one section in a worker process of its own session, killed (group and all) after
    ``timeout_s``; its record (gpu_report.record)."""
    tmp = Path(tempfile.mkdtemp(prefix="ga"))  # short: servers put sockets below it
    result, log = tmp / "result.json", tmp / "section.log"
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1",
           PATH_ENV: os.pathsep.join(str(p) for p in extra_path)}
    started, wall = time.monotonic(), time.time()
    timed_out = False
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(WORKER), section.module,
                                 section.function, fake_gpus, str(result)],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=GRACE_S)
        _signal_group(proc.pid, signal.SIGKILL)  # whatever of the group is still there
        proc.wait()
    seconds = time.monotonic() - started
    log_tail = log.read_text(errors="replace")[-4000:]
    if timed_out:
        outcome: dict[str, Any] = {"outcome": "timed out",
                                   "reason": f"timed out after {timeout_s:.0f} s"}
    else:
        try:
            outcome = json.loads(result.read_text())
        except (OSError, ValueError) as exc:
            outcome = {"outcome": "error", "reason": f"the worker exited {proc.returncode} "
                       f"without a result ({exc})"}
    sweep(tmp, wall if timed_out else None)
    shutil.rmtree(tmp, ignore_errors=True)
    return record(section.name, section.title, outcome, seconds, log_tail)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def environment() -> dict[str, str]:
    """What this machine offers, as the report's header says it."""
    from gpu_check_common import LIB_DIR, container_runtime, mps_control_why
    from gpupool.executors.interpreter import job_python
    from gpupool.interposer import build

    code = ("import torch\nok = torch.cuda.is_available()\n"
            "print(torch.__version__, '/', torch.cuda.get_device_name(0) if ok else "
            "'CUDA not available')")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=False)
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        torch = done.stdout.strip() or f"not importable ({said[-160:]})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        torch = f"cannot probe ({exc})"
    smi = "not on PATH"
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout.strip().replace("\n", "; ")
    ok, where = build.available(LIB_DIR)
    return {"python": f"{sys.version.split()[0]} (jobs get {job_python()})", "torch": torch,
            "nvidia-smi": smi,
            "interposer": where if ok else f"cannot be built: {where}",
            "MPS": mps_control_why() or "nvidia-cuda-mps-control found",
            "containers": container_runtime() or "no podman or docker"}


def run_all(sections: Sequence[Section], fake_gpus: str, out: Path, budget_s: float,
            extra_path: Sequence[str] = (), env_info: dict[str, str] | None = None,
            ) -> list[dict[str, Any]]:
    """Run ``sections`` one after another within ``budget_s``, writing the report after
    each; the records. A section that would start with under GRACE_S + 10 s of the budget
    left is skipped, saying so."""
    started = time.monotonic()
    run: dict[str, Any] = {"date": today(), "machine": machine(), "fake_gpus": fake_gpus or None,
                           "budget_s": budget_s, "total_s": 0.0,
                           "sections": [s.name for s in sections],
                           "environment": env_info or {}}
    records: list[dict[str, Any]] = []
    for section in sections:
        left = budget_s - (time.monotonic() - started)
        if left < GRACE_S + 10:
            rec = record(section.name, section.title, {
                "outcome": "skipped",
                "reason": f"the run's budget of {budget_s:.0f} s was spent before it started"}, 0)
        else:
            print(f"== {section.name} (at most {min(section.timeout_s, left - GRACE_S):.0f} s)",
                  flush=True)
            rec = run_one(section, fake_gpus, min(section.timeout_s, left - GRACE_S),
                          extra_path)
        records.append(rec)
        print(f"   {rec['status']}: {rec['reason']}", flush=True)
        run["total_s"] = round(time.monotonic() - started, 1)
        write(out, run, records)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        for s in SECTIONS:
            print(f"{s.name:11} {s.timeout_s:4.0f} s  {s.title}")
        return 0
    records = run_all(plan(args), args.fake_gpus, args.out, args.budget,
                      env_info=environment())
    print(f"wrote {args.out / 'gpu.md'} and gpu.json")
    return 1 if any(r["status"] in FAILING for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
