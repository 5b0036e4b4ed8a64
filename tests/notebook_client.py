"""Talking to a real JupyterLab through gpupool's gateway, for the notebook tests and the
notebook benchmark: wait until a notebook is ready, run code in a kernel over the WebSocket,
and read and write files through Jupyter's contents API."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from websockets.sync.client import connect

READY_TIMEOUT_S = 120.0


def wait_for(api: httpx.Client, job_id: str, want: str, timeout: float = READY_TIMEOUT_S,
             ) -> dict[str, Any]:
    """The job's view once ``want`` holds: "ready" (its ``url`` is set) or a phase name.
    AssertionError with the last view when it does not come within ``timeout``."""
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = api.get(f"/jobs/{job_id}").json()
        if (want == "ready" and view.get("url")) or view.get("phase") == want:
            return view
        assert view.get("phase") not in ("failed", "cancelled", "succeeded"), view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not {want} within {timeout:g} s: {view}")


def base_of(url: str) -> str:
    """``.../nb/<id>/`` from a notebook's ``.../nb/<id>/lab`` URL."""
    return url[: -len("lab")] if url.endswith("lab") else url


def run_code(base: str, token: str, code: str, timeout: float = 60.0) -> str:
    """Start a kernel, run ``code`` in it over the kernel WebSocket, shut it down; the
    ``text/plain`` of its result (or its stream output when there is no result)."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=timeout,
                      trust_env=False) as http:
        made = http.post("api/kernels", json={"name": "python3"})
        assert made.status_code == 201, made.text
        kernel = made.json()["id"]
        try:
            ws_url = base.replace("http", "ws", 1) + f"api/kernels/{kernel}/channels"
            with connect(ws_url, additional_headers=headers, open_timeout=timeout,
                         max_size=None) as ws:
                return execute(ws, code, timeout)
        finally:
            http.delete(f"api/kernels/{kernel}")


def execute(ws: Any, code: str, timeout: float) -> str:
    """Send one execute_request on the open kernel channel and wait for its answer."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    deadline = time.monotonic() + timeout
    streamed = ""
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = message["msg_type"]
        if kind == "execute_result":
            return str(message["content"]["data"]["text/plain"])
        if kind == "stream":
            streamed += message["content"]["text"]
        if kind == "error":
            raise AssertionError(f"the kernel failed: {message['content']}")
        if kind == "status" and message["content"]["execution_state"] == "idle" and streamed:
            return streamed
    raise AssertionError(f"no answer to {code!r} within {timeout:g} s")
