"""The GPU acceptance run's results: one record per section with a status that never claims
more than was seen, and the two files written from them, ``gpu.json`` and ``gpu.md``.

Statuses: ``passed`` (every check held), ``partial`` (some held, the rest skipped, none
failed), ``failed`` (a check failed), ``skipped`` (the section could not run here, or every
check was skipped: the reason says why), ``timed out`` and ``error`` (the section broke).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

STATUSES = ("passed", "partial", "failed", "skipped", "timed out", "error")


def verdict_of(value: str) -> str:
    """``held``, ``failed`` or ``skipped`` from a check's text (anything else: failed)."""
    head = value.split(":", 1)[0].strip()
    return head if head in ("held", "skipped") else "failed"


def status_of(checks: dict[str, str]) -> tuple[str, str]:
    """The status and its reason from a section's checks (see the module)."""
    kinds = [verdict_of(v) for v in checks.values()]
    failed = [name for name, v in checks.items() if verdict_of(v) == "failed"]
    if failed:
        return "failed", f"{len(failed)} of {len(checks)} failed: {', '.join(failed)}"
    skipped = [v.split(":", 1)[-1].strip() for v in checks.values()
               if verdict_of(v) == "skipped"]
    if not checks:
        return "skipped", "the section made no check"
    if "held" not in kinds:
        return "skipped", "every check skipped: " + "; ".join(dict.fromkeys(skipped))
    if skipped:
        return "partial", (f"{kinds.count('held')} held, {len(skipped)} skipped: "
                           + "; ".join(dict.fromkeys(skipped)))
    return "passed", f"{len(checks)} held"


def record(name: str, title: str, outcome: dict[str, Any], seconds: float,
           log_tail: str = "") -> dict[str, Any]:
    """A section's record from the worker's outcome (or the runner's: ``timed out``)."""
    rec: dict[str, Any] = {"name": name, "title": title, "seconds": round(seconds, 1),
                           "checks": {}, "markdown": "", "found": {}, "log_tail": log_tail}
    kind = outcome.get("outcome")
    if kind == "ran":
        found = dict(outcome.get("found") or {})
        rec["checks"] = {str(k): str(v) for k, v in (found.pop("checks", None) or {}).items()}
        rec["markdown"] = str(found.pop("markdown", "") or "")
        rec["found"] = found
        rec["status"], rec["reason"] = status_of(rec["checks"])
    elif kind in ("skipped", "timed out"):
        rec["status"], rec["reason"] = kind, str(outcome.get("reason", ""))
    else:
        rec["status"] = "error"
        rec["reason"] = str(outcome.get("reason") or f"no result ({outcome})")
        rec["traceback"] = str(outcome.get("traceback", ""))
    return rec


def _cell(text: str, width: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def markdown(run: dict[str, Any], records: list[dict[str, Any]]) -> str:
    gpus = run.get("fake_gpus") or "real (NVML)"
    lines = ["# GPU acceptance run", "",
             f"Run {run['date']} by `bench/gpu_acceptance.py` on {run['machine']}; GPUs: "
             f"{gpus}; {run['total_s']:.0f} s in all (budget {run['budget_s']:.0f} s).", ""]
    env = run.get("environment") or {}
    if env:
        lines += ["Environment: " + "; ".join(f"{k}: {_cell(v, 200)}" for k, v in env.items())
                  + ".", ""]
    lines += ["| section | status | time | why / summary |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']:.0f} s | {_cell(r['reason'])} |"
              for r in records]
    for r in records:
        lines += ["", f"## {r['name']}: {r['title']}", "",
                  f"**{r['status']}** ({r['seconds']:.1f} s): {_cell(r['reason'], 400)}"]
        if r["checks"]:
            lines += ["", "| check | result |", "|---|---|"]
            lines += [f"| {_cell(k, 80)} | {_cell(v, 300)} |" for k, v in r["checks"].items()]
        if r["markdown"]:
            lines += ["", r["markdown"]]
        if r["status"] in ("error", "timed out") and (r.get("traceback") or r["log_tail"]):
            lines += ["", "```", (r.get("traceback") or r["log_tail"])[-1500:].strip(), "```"]
    return "\n".join(lines) + "\n"


def write(out: Path, run: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """``gpu.json`` (everything) and ``gpu.md`` (the summary) in ``out``, each replaced
    whole, so a run cut short leaves the sections finished so far."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu.json", json.dumps({"run": run, "sections": records}, indent=1,
                                               default=str) + "\n"),
                       ("gpu.md", markdown(run, records))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def today() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")
