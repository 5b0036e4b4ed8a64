"""What an image costs at start: submit → running (the API's phase) and submit → started
(the command has written its first file) for a job on the host without a sandbox, a job in
bubblewrap, and a job in a container image (podman with runc; a busybox image built here by
tests/image_builder.py), against one real `gpupool up` run as root with fake GPUs.

Writes bench/results/images.md and .json. Run as root (rootful podman):

    .venv/bin/python bench/images_bench.py [--jobs 15]

Also the cost of ``gpupool run --code``: packing and uploading a 50 MiB tree (40 files of
random bytes, so gzip cannot shrink it) the first time, and the second time (unchanged: the
client's remembered digest is found on the server, nothing is packed or sent).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from _common import RESULTS, machine, speed_probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import image_builder
from server_harness import Server, job_reachable_dir

KINDS = (("host, no sandbox", {}, "none"), ("host, bwrap", {}, "bwrap"),
         ("image (podman, runc)", {"image": image_builder.IMAGE}, "bwrap"))


def _one(api: httpx.Client, spec: dict[str, Any], marker: Path) -> tuple[float, float]:
    """(submit → running, submit → started) in ms for one job that touches ``marker``."""
    body = {"command": ["sh", "-c", f"touch {marker}; sleep 0.2"], "workdir": str(marker.parent),
            **spec}
    t0 = time.perf_counter()
    made = api.post("/jobs", json=body)
    made.raise_for_status()
    job = made.json()["id"]
    running = started = 0.0
    while not (running and started):
        now = (time.perf_counter() - t0) * 1000
        if not started and marker.exists():
            started = now
        if not running and api.get(f"/jobs/{job}").json()["phase"] in ("running", "succeeded"):
            running = now
        if now > 60_000:
            raise RuntimeError(f"job {job} did not start within 60 s")
        time.sleep(0.002)
    while api.get(f"/jobs/{job}").json()["phase"] == "running":
        time.sleep(0.05)
    return running, started


def measure(jobs: int) -> dict[str, Any]:
    found: dict[str, Any] = {"jobs": jobs, "rows": []}
    home = Path(tempfile.mkdtemp(prefix="gpimgb-"))
    image_builder.build(home)
    shared = job_reachable_dir("gpimgbw")
    shared.chmod(0o777)
    for label, spec, sandbox in KINDS:
        server = Server(home / label.split()[0] / sandbox, "", "2xA100-80GB", isolated=True,
                        extra_env={"GPUPOOL_SANDBOX": sandbox, "GPUPOOL_IMAGE_PULL": "never",
                                   "GPUPOOL_IMAGE_NETWORK": "none"})
        server.home.mkdir(parents=True)
        server.start()
        try:
            with server.client() as api:
                samples = [_one(api, spec, shared / f"{sandbox}-{len(spec)}-{i}")
                           for i in range(jobs)]
        finally:
            server.stop()
            shutil.rmtree(server.work_dir, ignore_errors=True)
        running = [r for r, _ in samples[1:]]  # the first warms caches
        started = [s for _, s in samples[1:]]
        found["rows"].append({
            "kind": label, "running_p50_ms": round(statistics.median(running), 1),
            "started_p50_ms": round(statistics.median(started), 1),
            "started_max_ms": round(max(started), 1)})
    shutil.rmtree(home, ignore_errors=True)
    return found


def code_upload(mib: int = 50) -> dict[str, float]:
    """Seconds to pack and upload a ``mib`` MiB tree, first and second time (SDK)."""
    import os

    from gpupool.sdk import Client

    home = Path(tempfile.mkdtemp(prefix="gpcodeb-"))
    os.environ["XDG_CACHE_HOME"] = str(home / "cache")  # the client's cache: this run's own
    tree = home / "tree"
    tree.mkdir()
    for i in range(40):
        (tree / f"part{i:02d}.bin").write_bytes(os.urandom((mib << 20) // 40))
    server = Server(home / "home", "", "1xA100-80GB")
    server.home.mkdir(parents=True)
    server.start()
    try:
        with Client(server.url, server.token, timeout=300) as sdk:
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                sdk.upload_code(tree)
                times.append(time.perf_counter() - t0)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return {"mib": mib, "first_s": round(times[0], 2), "second_s": round(times[1], 2)}


def report(found: dict[str, Any]) -> str:
    lines = [
        "# Container images: the cost at start", "",
        f"{date.today()}, {found['machine']}, speed probe {found['probe_ms']:.0f} ms; "
        f"{found['jobs']} jobs of each kind one after another (the first not counted), "
        "on one real `gpupool up` as root with fake GPUs. *running*: the API says the job "
        "runs (the launch returned); *started*: the command has written its first file.", "",
        "| job | submit → running p50 | submit → started p50 | started, slowest |",
        "|---|---|---|---|"]
    for row in found["rows"]:
        lines.append(f"| {row['kind']} | {row['running_p50_ms']:.0f} ms | "
                     f"{row['started_p50_ms']:.0f} ms | {row['started_max_ms']:.0f} ms |")
    code = found["code"]
    lines += ["", f"Code shipped from the client (`gpupool run --code`, through the SDK, to a "
              f"server on loopback): a {code['mib']} MiB tree of 40 incompressible files "
              f"takes {code['first_s']:.2f} s to pack (gzip level 1) and upload the first "
              f"time, and {code['second_s']:.2f} s the second time (the client remembers the "
              "unchanged tree's digest by its names, sizes and times; the server has it: "
              "nothing is packed or sent).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if (why := image_builder.missing()) is not None:
        raise SystemExit(why)
    found = measure(args.jobs)
    found["code"] = code_upload()
    found.update(machine=machine(), probe_ms=speed_probe())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "images.json").write_text(json.dumps(found, indent=1) + "\n")
    (args.out / "images.md").write_text(report(found))
    print(report(found))


if __name__ == "__main__":
    main()
