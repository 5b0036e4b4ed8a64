"""The server under test of the notebook benchmark (bench/notebook_bench.py): one real
`gpupool up` (``Bench``), what the run made on it and its clean-up, and whether a notebook
answers through the gateway."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.progress import Progress

from notebook_bench_procs import kill_workloads, notebook_processes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpupool.executors import accounts
from server_harness import Server


class Bench:
    """One server and what the run made on it; ``close`` undoes it all."""

    def __init__(self, fake_gpus: str, progress: Progress) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="gpnbb"))
        self.sandbox = "bwrap" if shutil.which("bwrap") else "none"
        self.server = Server(self.tmp / "home", "", fake_gpus, isolated=True,
                             extra_env={"GPUPOOL_SANDBOX": self.sandbox})
        self.server.home.mkdir(parents=True)
        self.students: list[str] = []
        self.progress = progress
        self.gateway = ""  # http://host:port of the gateway, once a notebook named it

    def start(self) -> None:
        self.server.start()
        self.admin = httpx.Client(base_url=self.server.url + "/api/v1", timeout=60,
                                  trust_env=False,
                                  headers={"Authorization": f"Bearer {self.server.token}"})

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def key(self) -> bytes:
        return (self.server.home / "gateway.key").read_bytes()

    def endpoint(self, job_id: str) -> dict[str, Any]:
        """Where the notebook's Jupyter listens, as the server recorded it."""
        path = self.server.home / "gpupool.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT endpoint FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        return dict(json.loads(row[0]))

    def cancel_and_wait(self, ids: Sequence[str], timeout: float = 60.0) -> None:
        """Cancel ``ids`` and wait until they ended and their processes are gone."""
        for job_id in ids:
            self.admin.post(f"/jobs/{job_id}/cancel")
        deadline = time.monotonic() + timeout
        left = set(ids)
        while left and time.monotonic() < deadline:
            views = self.admin.get("/jobs", params={"kind": "notebook"}).json()
            left = {v["id"] for v in views if v["id"] in left
                    and v["phase"] not in ("cancelled", "failed", "succeeded")}
            time.sleep(0.1)
        while notebook_processes(self.server.home)["trees"] and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        """Stop everything the run started, whatever state it is in."""
        with contextlib.suppress(Exception):
            if self.server.proc is not None and self.server.proc.poll() is None:
                views = self.admin.get("/jobs", params={"kind": "notebook"}, timeout=10).json()
                for v in views:
                    if v["phase"] not in ("cancelled", "failed", "succeeded"):
                        self.admin.post(f"/jobs/{v['id']}/cancel", timeout=10)
        with contextlib.suppress(Exception):
            self.admin.close()
        self.server.stop()
        for _ in range(50):  # Jupyter may fork kernels while dying: until none is left
            if not kill_workloads(self.server.home):
                break
            time.sleep(0.1)
        for name in self.students:
            # userdel refuses while a process of the account runs: a few tries
            for _ in range(20):
                try:
                    accounts.remove(accounts.derived_name(name), name)
                    break
                except accounts.AccountError:
                    time.sleep(0.25)
        shutil.rmtree(self.server.work_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def gateway_of(url: str) -> str:
    """``http://host:port`` of a notebook URL."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def answers(url: str, token: str) -> bool:
    """Whether GET ``url`` with ``token`` answers 200, on a new connection: a kept-alive
    connection to the gateway costs ~40 ms a request (see readings), which would blur when
    each notebook first answered."""
    parsed = urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    try:
        conn.request("GET", parsed.path, headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        answer.read()
        return answer.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
