"""GPU acceptance, notebooks section: two notebooks at 0.5 of one GPU, each seeing only its
slice, one left idle and reclaimed while the other keeps its share.

Against a real ``gpupool up`` on this machine (its real GPUs through NVML; ``--fake-gpus``
runs the same steps as a dry run, where there is no CUDA and the slice check says so):

1. two notebooks at ``gpus: 0.5`` land on one card (placement read back from the API);
2. in each, a kernel reads ``torch.cuda.mem_get_info()`` through the gateway: under the
   interposer the total is the slice (half the card), not the card;
3. the second notebook has a short idle timeout; it is suspended while the first, with the
   default timeout, keeps running, and its GPU share is given back.

Run: ``.venv/bin/python bench/gpu_notebooks.py [--fake-gpus 1xH200-141GB] [--out DIR]``;
writes ``gpu_notebooks.md`` and ``.json`` in ``--out`` (default bench/results). The GPU
acceptance script (issue 21) calls :func:`run_section`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import RESULTS, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from notebook_client import base_of, run_code, wait_for
from server_harness import Server, kill_leftover_jobs

SLICE_CODE = (
    "try:\n"
    "    import torch\n"
    "    free, total = torch.cuda.mem_get_info()\n"
    "    print(f'total={total} free={free}')\n"
    "except Exception as exc:\n"
    "    print(f'skipped={type(exc).__name__}: {exc}')\n"
)


def run_section(fake_gpus: str, idle_timeout_s: float = 20.0) -> dict[str, Any]:
    """The section's steps against a new server (see the module); its findings."""
    home = Path(tempfile.mkdtemp(prefix="gpnb-"))
    server = Server(home / "home", "", fake_gpus)
    server.home.mkdir(parents=True)
    server.start()
    found: dict[str, Any] = {"fake_gpus": fake_gpus or None}
    try:
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                          headers={"Authorization": f"Bearer {server.token}"}) as api:
            card = api.get("/nodes").json()[0]["gpus"][0]
            found["card"] = card
            kept = api.post("/jobs", json={"kind": "notebook", "name": "kept",
                                           "gpus": 0.5}).json()["id"]
            idle = api.post("/jobs", json={"kind": "notebook", "name": "idle", "gpus": 0.5,
                                           "idle_timeout_s": idle_timeout_s}).json()["id"]
            started = time.monotonic()
            views: dict[str, dict[str, Any]] = {}
            ready_after: list[float] = []
            found["slices"] = {}
            # the idle one first, each checked as soon as it is ready: its idle clock runs
            # from its start, and it must not be suspended before its own check
            for nb in (idle, kept):
                view = views[nb] = wait_for(api, nb, "ready")
                ready_after.append(time.monotonic() - started)
                found["slices"][view["name"]] = _slice(run_code(base_of(str(view["url"])),
                                                                server.token, SLICE_CODE))
            found["ready_s"] = round(max(ready_after), 2)
            found["placements"] = {v["name"]: v["placement"] for v in views.values()}
            found["enforcement"] = {v["name"]: v["enforcement"] for v in views.values()}
            found["limit_mib"] = {v["name"]: api.get(f"/jobs/{v['id']}").json()[
                "gpu_memory_limit_mib"] for v in views.values()}
            idle_started = time.monotonic()
            suspended = wait_for(api, idle, "suspended", timeout=idle_timeout_s + 90)
            found["reclaimed_after_s"] = round(time.monotonic() - idle_started, 1)
            found["reclaim_note"] = next((e["message"] for e in suspended["events"]
                                          if "idle for" in e["message"]), "")
            found["kept_phase"] = api.get(f"/jobs/{kept}").json()["phase"]
    finally:
        server.stop()
        kill_leftover_jobs(server.home)  # notebooks outlive the server, as jobs do
        shutil.rmtree(server.work_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    found["verdict"] = verdict(found)
    return found


def _slice(output: str) -> dict[str, Any]:
    """``total=… free=…`` or ``skipped=…`` as printed by SLICE_CODE."""
    fields = dict(part.split("=", 1) for part in output.split() if "=" in part)
    if "total" in fields:
        return {"total_bytes": int(fields["total"]), "free_bytes": int(fields["free"])}
    return {"skipped": output.strip().split("=", 1)[-1]}


def verdict(found: dict[str, Any]) -> dict[str, str]:
    """Per check: "held", "failed: why" or "skipped: why"."""
    out: dict[str, str] = {}
    places = list(found["placements"].values())
    same = len({(p["node"], tuple(p["gpus"])) for p in places}) == 1
    halves = all(p["gpu_milli"] == 500 for p in places)
    out["one card, two halves"] = "held" if same and halves else f"failed: {places}"
    card_mib = int(found["card"]["memory_mib"])
    for name, seen in found["slices"].items():
        if "skipped" in seen:
            out[f"{name} sees its slice"] = f"skipped: {seen['skipped']}"
            continue
        total_mib = seen["total_bytes"] / 2**20
        limit = found["limit_mib"][name] or card_mib
        out[f"{name} sees its slice"] = (
            "held" if abs(total_mib - limit) <= 1 and total_mib < card_mib else
            f"failed: total {total_mib:.0f} MiB, slice {limit} MiB, card {card_mib} MiB")
    out["idle one reclaimed, other kept"] = (
        "held" if found["reclaim_note"] and found["kept_phase"] == "running"
        else f"failed: note {found['reclaim_note']!r}, kept {found['kept_phase']}")
    return out


def write(found: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_notebooks.json").write_text(json.dumps(found, indent=2) + "\n")
    lines = ["# GPU acceptance: notebooks", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; GPUs: "
             f"{found['fake_gpus'] or 'real (NVML)'}; card "
             f"{found['card']['model']} {found['card']['memory_mib']} MiB.",
             "", "| check | result |", "|---|---|"]
    lines += [f"| {check} | {result} |" for check, result in found["verdict"].items()]
    lines += ["", f"Both ready {found['ready_s']} s after submit; the idle one was suspended "
              f"{found['reclaimed_after_s']} s after both were ready ({found['reclaim_note']})."]
    (out / "gpu_notebooks.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake-gpus", default="",
                        help="declare fake GPUs (a dry run), e.g. 1xH200-141GB; default: "
                        "this machine's real GPUs")
    parser.add_argument("--idle-timeout", type=float, default=20.0,
                        help="the idle notebook's timeout in seconds (default 20)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    found = run_section(args.fake_gpus, args.idle_timeout)
    write(found, args.out)
    for check, result in found["verdict"].items():
        print(f"{check}: {result}")


if __name__ == "__main__":
    main()
