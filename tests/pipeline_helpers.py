"""Helpers of the pipeline tests: step builders and waiting on runs of a real server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from server_harness import wait_for

PY = sys.executable
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "pipelines"


def py_step(name: str, code: str, kind: str = "shell", **extra: Any) -> dict[str, Any]:
    """A step running ``code`` with this interpreter (``os``, ``pathlib`` and ``out``, the
    outputs dir, are at hand)."""
    prelude = "import os, sys, time, pathlib\nout = pathlib.Path(os.environ['GPUPOOL_OUTPUTS'])\n"
    return {"name": name, "kind": kind, "command": [PY, "-c", prelude + code], **extra}


def gate(path: Path) -> str:
    """Code that blocks until ``path`` exists."""
    return f"while not pathlib.Path({str(path)!r}).exists(): time.sleep(0.05)\n"


def start(client: httpx.Client, definition: dict[str, Any], **body: Any) -> str:
    response = client.post("/pipeline-runs", json={"definition": definition, **body})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def run_view(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/pipeline-runs/{run_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def steps(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in view["steps"]}


def finished(client: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        view = run_view(client, run_id)
        return view if view["state"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(done, timeout=timeout)
    return result


def step_state(client: httpx.Client, run_id: str, step: str, *states: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = steps(run_view(client, run_id))[step]
        return found if found["state"] in states else None

    result: dict[str, Any] = wait_for(reached, timeout=60)
    return result
