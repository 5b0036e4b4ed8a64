"""GPU acceptance, sharing section: does sharing a card pay? Four small training jobs
(bench/gpu_train.py ``--model small``: a light convnet that uses a fraction of the card, a
fixed number of steps) run one after another on a whole GPU each, then together at
``gpus: 0.25`` each, against a real ``gpupool up`` as shipped (``GPUPOOL_SHARING=auto``: MPS
where the machine has it, else the interposer).

Figures: each phase's total time (first submit to last end, as this section sees it), each
job's throughput (its own steps/s), and the card's mean utilisation over the phase (NVML,
sampled every 0.25 s; real GPUs only). Baidu claims −40 % total time and +50 % utilisation
from sharing. Without CUDA (a dry run) the jobs train a toy size on the CPU: placement is
checked, the timing checks are skipped.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from gpu_check_common import Skip, cuda_why, finish, held, job_dir, pool, submit, torch_why

TRAIN = "gpu_train.py"
JOBS = 4
REAL = ["--model", "small", "--batch", "256", "--size", "32", "--warmup", "20", "--steps",
        "1500", "--windows", "1"]
TOY = ["--model", "small", "--batch", "8", "--size", "16", "--warmup", "1", "--steps", "3",
       "--windows", "1"]


class Utilisation:
    """The mean NVML GPU utilisation (%) of every card while in a ``with`` block; None
    without NVML."""

    def __init__(self, period_s: float = 0.25) -> None:
        self.period_s = period_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.why: str | None = None

    def __enter__(self) -> Utilisation:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # no module, no driver: the figure is missing, say why
            self.why = f"NVML: {exc}"
            return self
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                   for i in range(pynvml.nvmlDeviceGetCount())]
        self._thread = threading.Thread(target=self._sample, args=(pynvml, handles),
                                        daemon=True)
        self._thread.start()
        return self

    def _sample(self, pynvml: Any, handles: list[Any]) -> None:
        try:
            while not self._stop.wait(self.period_s):
                self.samples.append(max(int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
                                        for h in handles))
        finally:
            pynvml.nvmlShutdown()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def mean(self) -> float | None:
        return round(statistics.fmean(self.samples), 1) if self.samples else None


def phase(run_jobs: Callable[[], list[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``run_jobs`` (it submits and finishes the phase's jobs), timed and sampled."""
    with Utilisation() as util:
        t0 = time.monotonic()
        jobs = run_jobs()
        total = time.monotonic() - t0
    return {"total_s": round(total, 2), "utilisation_pct": util.mean, "nvml_why": util.why,
            "jobs": [{"placement": j["placement"], "enforcement": j["enforcement"],
                      "phase": j["phase"], "exit_code": j["exit_code"],
                      "result": j["result"], "output_tail": j["output"][-600:]}
                     for j in jobs]}


def run(fake_gpus: str) -> dict[str, Any]:
    no_torch = torch_why()
    if no_torch:
        raise Skip(no_torch)
    no_cuda = cuda_why()
    sizes = TOY if no_cuda else REAL
    code = job_dir(TRAIN)
    command = [sys.executable, TRAIN, *sizes]
    found: dict[str, Any] = {"fake_gpus": fake_gpus or None, "no_cuda": no_cuda,
                             "sizes": " ".join(sizes)}
    with pool(fake_gpus) as p:
        def one_by_one() -> list[dict[str, Any]]:
            return [finish(p.client, submit(p.client, name=f"whole-{i}", workdir=str(code),
                                            gpus=1, command=command), 300)
                    for i in range(JOBS)]

        def together() -> list[dict[str, Any]]:
            ids = [submit(p.client, name=f"quarter-{i}", workdir=str(code), gpus=0.25,
                          command=command) for i in range(JOBS)]
            return [finish(p.client, job_id, 300) for job_id in ids]

        found["whole"] = phase(one_by_one)
        found["shared"] = phase(together)
    found["checks"] = verdict(found)
    found["markdown"] = table(found)
    return found


def _rates(ph: dict[str, Any]) -> list[float]:
    return [float((j["result"] or {}).get("steps_per_s", 0)) for j in ph["jobs"]]


def verdict(found: dict[str, Any]) -> dict[str, str]:
    """Per check: "held…", "failed: why" or "skipped: why" (see the module)."""
    whole, shared = found["whole"], found["shared"]
    places = [j["placement"] or {} for j in shared["jobs"]]
    cards = {(p.get("node"), tuple(p.get("gpus") or ())) for p in places}
    out = {"four quarters on one card": held(
        len(cards) == 1 and all(p.get("gpu_milli") == 250 for p in places),
        f"{[(p.get('node'), p.get('gpus'), p.get('gpu_milli')) for p in places]}, enforcement "
        f"{sorted({str(j['enforcement']) for j in shared['jobs']})}")}
    broken = [j for ph in (whole, shared) for j in ph["jobs"] if j["exit_code"] != 0
              or not j["result"]]
    if broken:
        return out | {"every job trained": f"failed: {broken[0]['output_tail'][-300:]}"}
    out["every job trained"] = held(True, f"{2 * JOBS} jobs")
    if found["no_cuda"]:
        reason = f"skipped: {found['no_cuda']} (toy size on the CPU)"
        return out | {"together faster than one after another": reason,
                      "Baidu's −40 % total time": reason, "Baidu's +50 % utilisation": reason}
    ts, tw = shared["total_s"], whole["total_s"]
    change = (ts - tw) / tw * 100 if tw else 0.0
    out["together faster than one after another"] = held(
        ts < tw, f"{ts:.1f} s together vs {tw:.1f} s one after another ({change:+.0f} %)")
    out["Baidu's −40 % total time"] = held(change <= -40, f"{change:+.0f} % total time")
    uw, us = whole["utilisation_pct"], shared["utilisation_pct"]
    out["Baidu's +50 % utilisation"] = (
        f"skipped: {whole['nvml_why'] or 'no utilisation samples'}" if uw is None or us is None
        else held(uw > 0 and us >= 1.5 * uw, f"mean {us:.0f} % shared vs {uw:.0f} % whole"))
    return out


def table(found: dict[str, Any]) -> str:
    lines = [f"Each job: `gpu_train.py {found['sizes']}`.", "",
             "| phase | total (s) | mean GPU util | steps/s per job | enforcement |",
             "|---|---|---|---|---|"]
    for name, label in (("whole", f"{JOBS} × 1 GPU, one after another"),
                        ("shared", f"{JOBS} × 0.25 GPU, together")):
        ph = found[name]
        util = f"{ph['utilisation_pct']:.0f} %" if ph["utilisation_pct"] is not None else "n/a"
        rates = ", ".join(f"{r:.0f}" for r in _rates(ph))
        how = "; ".join(sorted({str(j["enforcement"]) for j in ph["jobs"]}))
        lines.append(f"| {label} | {ph['total_s']:.1f} | {util} | {rates} | {how} |")
    if found["no_cuda"]:
        lines += ["", f"No CUDA ({found['no_cuda']}): a toy size on the CPU, not a figure."]
    return "\n".join(lines)
