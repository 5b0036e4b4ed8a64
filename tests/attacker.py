"""A hostile workload: ``python3 attacker.py TARGETS_JSON`` tries every way into another
team's work and the server that the tenant-isolation tests know of, and prints one JSON line
``{"attack": "blocked: why" | "LEAK: what"}``. Standard library only (it runs as a job's
account with whatever interpreter that account has)."""

from __future__ import annotations

import json
import os
import signal
import sys


def read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(200)
    except OSError as exc:
        return f"blocked: {exc.strerror}"
    return f"LEAK: {data[:60]!r}"


def write(path: str) -> str:
    try:
        with open(path, "r+b") as f:
            f.write(b"99999999999999\n")
    except OSError as exc:
        return f"blocked: {exc.strerror}"
    return "LEAK: wrote it"


def replace(path: str) -> str:
    tmp = path + ".mine"
    try:
        with open(tmp, "w") as f:
            f.write("99999999999999\n")
        os.replace(tmp, path)
    except OSError as exc:
        return f"blocked: {exc.strerror}"
    return "LEAK: replaced it"


def kill(pid: int) -> str:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as exc:
        return f"blocked: {exc.strerror}"
    return "LEAK: signalled"


def main() -> None:
    targets = json.loads(sys.argv[1])
    results: dict[str, str] = {}
    for name, path in targets["read"].items():
        results[f"read {name}"] = read(path)
    for pid in targets["pids"]:
        results[f"environ of {pid}"] = read(f"/proc/{pid}/environ")
        results[f"signal {pid}"] = kill(pid)
    own = {int(g) for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g}
    limit = os.environ.get("GPUPOOL_SHARE_LIMIT_FILE", "")
    if own and limit:
        results["write own limit"] = write(limit)
        results["replace own limit"] = replace(limit)
    elif own:
        results["own limit file"] = "LEAK: a GPU share without a limit file"
    for index in targets.get("devices", []):
        if index not in own:
            results[f"open /dev/nvidia{index}"] = read(f"/dev/nvidia{index}")
    present = [g for g in sorted(own) if os.path.exists(f"/dev/nvidia{g}")]
    print("OWN-DEVICES " + json.dumps(present), flush=True)
    env = dict(os.environ)
    found = [k for k, v in env.items() if any(s and s in v for s in targets["secrets"])]
    found += [k for k in env if k in ("GPUPOOL_HOME", "GPUPOOL_DATABASE_URL",
                                      "GPUPOOL_SECRET_KEY", "SERVER_ONLY_MARKER")]
    results["server secrets in env"] = f"LEAK: {found}" if found else "blocked: none"
    print("ATTACK " + json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
