"""The measurements of the notebook benchmark (bench/notebook_bench.py) on one notebook at a
time: submit -> usable (1.), and the gateway's added latency, HTTP and kernel round trips,
against the direct path to Jupyter (3.)."""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.sync.client import ClientConnection, connect

from notebook_bench_server import Bench, answers, gateway_of
from notebook_bench_stats import summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpupool.server.gateway.keys import notebook_secret
from notebook_client import base_of

SHARE = 0.125
SINGLE_POLL_S = 0.05
READY_TIMEOUT_S = 180.0
WARMUP = 10
BLOCK = 50
"""Kernel round trips per WebSocket connection: the gateway and the direct path alternate in
blocks, so that a drift of the machine's speed falls on both."""
FRESH = 150
"""GET api/status each way on a new connection per request (as a script that does not keep
its connection would)."""


# ----------------------------------------------------------------------------- 1. one notebook

def single_start(bench: Bench, name: str) -> dict[str, Any]:
    """Submit one notebook and poll, every SINGLE_POLL_S, its view (until ``url`` appears)
    and its ``api/status`` through the gateway (from the start, once the gateway is known)
    until the first 200. Seconds from before the POST: ``posted`` (the POST answered),
    ``running`` (the server's running event), ``url`` (first poll that saw it), ``ready``
    (first 200)."""
    wall0, t0 = time.time(), time.perf_counter()
    made = bench.admin.post("/jobs", json={"kind": "notebook", "gpus": SHARE, "name": name})
    assert made.status_code == 201, made.text
    posted = time.perf_counter() - t0
    job_id = made.json()["id"]
    status = f"{bench.gateway}/nb/{job_id}/api/status" if bench.gateway else ""
    url_at = ready_at = None
    view: dict[str, Any] = {}
    while ready_at is None:
        if time.perf_counter() - t0 > READY_TIMEOUT_S:
            raise RuntimeError(f"notebook {job_id} not ready within {READY_TIMEOUT_S} s: {view}")
        if url_at is None:
            view = bench.admin.get(f"/jobs/{job_id}").json()
            if view["phase"] in ("failed", "cancelled", "succeeded"):
                raise RuntimeError(f"notebook {job_id} ended: {view}")
            if view.get("url"):
                url_at = time.perf_counter() - t0
                status = base_of(view["url"]) + "api/status"
        if status and answers(status, bench.server.token):
            ready_at = time.perf_counter() - t0
            break
        time.sleep(SINGLE_POLL_S)
    if url_at is None:  # ready before the poll of the view saw its url
        view = bench.admin.get(f"/jobs/{job_id}").json()
    running = [e for e in view["events"] if e["phase"] == "running"]
    return {"id": job_id, "posted_s": posted, "url_s": url_at, "ready_s": ready_at,
            "running_s": (datetime.fromisoformat(running[0]["at"]).timestamp() - wall0
                          if running else None),
            "url": view.get("url"), "attempts": view["attempts"],
            "isolation": view.get("isolation"), "placement": view.get("placement")}


def measure_singles(bench: Bench, count: int) -> dict[str, Any]:
    progress = bench.progress
    task = progress.add_task("one notebook: submit -> usable (first one: cold)", total=count + 1)
    cold = single_start(bench, "cold")  # names the gateway; page cache cold
    bench.gateway = gateway_of(cold["url"])
    bench.cancel_and_wait([cold["id"]])
    progress.advance(task)
    runs = []
    for i in range(count):
        runs.append(single_start(bench, f"single-{i}"))
        bench.cancel_and_wait([runs[-1]["id"]])
        progress.advance(task)
    return {"cold": cold, "runs": runs,
            **{key: summary([r[f"{key}_s"] * 1000 for r in runs if r[f"{key}_s"] is not None])
               for key in ("posted", "running", "url", "ready")}}


# ----------------------------------------------------------------------------- 3. gateway cost

def execute_once(ws: ClientConnection, session: str) -> None:
    """Execute ``1`` on the open kernel channel; return once both its execute_result and its
    execute_reply arrived."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "bench", "session": session,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": "1", "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    want = {"execute_result", "execute_reply"}
    while want:
        message = json.loads(ws.recv(timeout=30))
        if message.get("parent_header", {}).get("msg_id") == msg_id:
            if message["msg_type"] == "error":
                raise RuntimeError(f"the kernel failed: {message['content']}")
            want.discard(message["msg_type"])


class Plain:
    """One HTTP/1.1 connection (the standard library's: the client's own cost stays well
    under a millisecond) to ``base`` (``http://host:port/prefix/``), sending ``headers``."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        parsed = urlsplit(base)
        self.prefix = parsed.path
        self.headers = headers
        self.conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)

    def get_ms(self, path: str) -> float:
        """GET ``path`` (below the prefix); the milliseconds to its whole 200 answer."""
        t0 = time.perf_counter()
        self.conn.request("GET", self.prefix + path, headers=self.headers)
        answer = self.conn.getresponse()
        body = answer.read()
        took = (time.perf_counter() - t0) * 1000
        if answer.status != 200:
            raise RuntimeError(f"GET {self.prefix + path}: {answer.status} {body[:300]!r}")
        return took

    def close(self) -> None:
        self.conn.close()


def measure_overhead(bench: Bench, http_requests: int, round_trips: int) -> dict[str, Any]:
    """On one fresh notebook: GET api/status through the gateway and directly, alternating,
    on two kept-alive connections; then ``1`` executed on one kernel over a WebSocket through
    the gateway and directly, in alternating blocks of BLOCK."""
    progress = bench.progress
    task = progress.add_task("gateway vs direct: HTTP, then kernel round trips",
                             total=2 * (http_requests + FRESH + round_trips))
    as_user = {"Authorization": f"Bearer {bench.server.token}"}
    nb = single_start(bench, "overhead")
    job_id = nb["id"]
    where = bench.endpoint(job_id)
    secret = notebook_secret(bench.key(), int(job_id), int(nb["attempts"]))
    paths = {"gateway": (base_of(nb["url"]), as_user),
             "direct": (f"http://{where['host']}:{where['port']}/nb/{job_id}/",
                        {"Authorization": f"token {secret}"})}
    kept_ms: dict[str, list[float]] = {"gateway": [], "direct": []}
    fresh: dict[str, list[float]] = {"gateway": [], "direct": []}
    kept = {label: Plain(base, headers) for label, (base, headers) in paths.items()}
    try:
        for i in range(WARMUP + http_requests):
            for label in ("gateway", "direct") if i % 2 else ("direct", "gateway"):
                took = kept[label].get_ms("api/status")
                if i >= WARMUP:
                    kept_ms[label].append(took)
                    progress.advance(task)
        for _ in range(FRESH):
            for label, (base, headers) in paths.items():
                with contextlib.closing(Plain(base, headers)) as once:
                    fresh[label].append(once.get_ms("api/status"))
                progress.advance(task)
        web = httpx.Client(base_url=paths["gateway"][0], headers=as_user, timeout=30,
                           trust_env=False)
        made = web.post("api/kernels", json={"name": "python3"})
        assert made.status_code == 201, made.text
        kernel = made.json()["id"]
        ws: dict[str, list[float]] = {"gateway": [], "direct": []}
        session = uuid.uuid4().hex
        while len(ws["direct"]) < round_trips:
            for label, (base, headers) in paths.items():
                url = base.replace("http", "ws", 1) + f"api/kernels/{kernel}/channels"
                with connect(url, additional_headers=headers, open_timeout=30,
                             max_size=None) as conn:
                    for _ in range(WARMUP):
                        execute_once(conn, session)
                    for _ in range(min(BLOCK, round_trips - len(ws[label]))):
                        t0 = time.perf_counter()
                        execute_once(conn, session)
                        ws[label].append((time.perf_counter() - t0) * 1000)
                        progress.advance(task)
        web.delete(f"api/kernels/{kernel}")
        web.close()
    finally:
        for plain in kept.values():
            plain.close()
        bench.cancel_and_wait([job_id])
    result: dict[str, Any] = {"notebook": job_id, "http_requests": http_requests,
                              "fresh_requests": FRESH, "kernel_round_trips": round_trips,
                              "raw_ms": {"http": kept_ms, "http_fresh": fresh, "kernel": ws}}
    for what, samples in (("http", kept_ms), ("http_fresh", fresh), ("kernel", ws)):
        gw, direct = summary(samples["gateway"]), summary(samples["direct"])
        result[what] = {"gateway": gw, "direct": direct,
                        "added": {q: gw[q] - direct[q] for q in ("p50", "p95", "p99")}}
    return result
