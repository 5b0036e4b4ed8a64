"""The issue's end-to-end story, typed as a user would: `gpupool` commands against a real
`gpupool up` with fake GPUs. Two 0.5-GPU jobs share one GPU, a third waits with a reason
shown by `describe`, and starts when one of the first two finishes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_harness import Server, make_server, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path, "1xA100-80GB")


def gpupool(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = server.env
    # No GPUPOOL_URL / GPUPOOL_TOKEN: the CLI finds the server through the data dir.
    env.pop("GPUPOOL_URL", None)
    env.pop("GPUPOOL_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "gpupool.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def waiter(gate: Path) -> list[str]:
    script = (
        "import os,time,pathlib\n"
        f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
        "print('fraction', os.environ['GPUPOOL_GPU_FRACTION'], flush=True)\n"
    )
    return ["--", sys.executable, "-c", script]


def phase(server: Server, job: str) -> str:
    return str(json.loads(gpupool(server, "describe", job, "--json").stdout)["phase"])


def test_two_halves_share_one_gpu_and_a_third_waits(server: Server, tmp_path: Path) -> None:
    gates = [tmp_path / f"gate{i}" for i in range(3)]
    ids = []
    for i in range(2):
        result = gpupool(server, "run", "--gpus", "0.5", "--name", f"half{i}", *waiter(gates[i]))
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())
    wait_for(lambda: all(phase(server, j) == "running" for j in ids))
    nodes = json.loads(gpupool(server, "nodes", "--json").stdout)
    assert nodes[0]["gpus"][0]["allocated_milli"] == 1000
    assert sorted(nodes[0]["gpus"][0]["jobs"]) == sorted(ids)

    third = gpupool(server, "run", "--gpus", "0.5", "--name", "third", *waiter(gates[2]))
    assert third.returncode == 0, third.stderr
    third_id = third.stdout.strip()
    wait_for(lambda: "needs 0.5 of one GPU" in gpupool(server, "describe", third_id).stdout)
    described = gpupool(server, "describe", third_id).stdout
    assert "pending" in described
    assert "no GPU with any share free" in " ".join(described.split())

    listing = json.loads(gpupool(server, "ps", "--json").stdout)
    assert {j["id"]: j["phase"] for j in listing} == {
        ids[0]: "running",
        ids[1]: "running",
        third_id: "pending",
    }

    gates[0].touch()
    wait_for(lambda: phase(server, ids[0]) == "succeeded")
    wait_for(lambda: phase(server, third_id) == "running")
    assert "fraction 0.5" in gpupool(server, "logs", ids[0]).stdout

    gates[1].touch()
    gates[2].touch()
    done = gpupool(
        server, "run", "--gpus", "0.5", "--wait", "--", sys.executable, "-c", "raise SystemExit(7)"
    )
    assert done.returncode == 7  # --wait exits with the job's exit code
    cancelled = gpupool(server, "cancel", third_id)
    assert cancelled.returncode in (0, 2)  # it may have finished already
