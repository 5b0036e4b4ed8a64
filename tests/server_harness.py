"""Start real `gpupool up` processes for tests, on SQLite or on the local PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_available() -> str | None:
    """None when the PostgreSQL test server answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_DSN):
            return None
    except Exception as exc:  # any failure means: skip, and say why
        return f"PostgreSQL at 127.0.0.1:5432/test not reachable: {exc}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A `gpupool up` child process with its own data dir (and PostgreSQL schema)."""

    home: Path
    database_url: str
    fake_gpus: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    extra_args: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(GPUPOOL_HOME=str(self.home), GPUPOOL_URL=self.url)
        env.pop("GPUPOOL_FAKE_GPUS", None)
        if self.token:
            env["GPUPOOL_TOKEN"] = self.token
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "gpupool.cli.main",
            "up",
            "--port",
            str(self.port),
            "--fake-gpus",
            self.fake_gpus,
            "--tick",
            "0.2",
            *self.extra_args,
        ]
        if self.database_url:
            args += ["--database-url", self.database_url]
        log = (self.home / "server.out").open("ab")
        self.home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.home / 'server.out').read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not start within 60 s")
        self.token = (self.home / "admin.token").read_text().strip()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=30,
        )


def backend_params() -> list[object]:
    reason = postgres_available()
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgres",
            id="postgres",
            marks=pytest.mark.skipif(reason is not None, reason=reason or ""),
        ),
    ]


def make_server(backend: str, tmp_path: Path, fake_gpus: str) -> Iterator[Server]:
    """Yield a started server on ``backend``; drop its PostgreSQL schema afterwards."""
    url = ""
    schema = ""
    if backend == "postgres":
        import psycopg

        schema = "gp_" + uuid.uuid4().hex[:12]
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    server = Server(tmp_path / "home", url, fake_gpus)
    server.home.mkdir(parents=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        _kill_leftover_jobs(server.home)
        if schema:
            import psycopg

            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _kill_leftover_jobs(home: Path) -> None:
    """Stop job processes a test left running (they outlive the server by design)."""
    import json

    for handle_file in (home / "runs").glob("*/*/handle.json"):
        try:
            pid = int(json.loads(handle_file.read_text())["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(handle_file.parent).encode() in cmdline:  # still ours, not a reused pid
                os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


def submit(client, **spec) -> str:  # type: ignore[no-untyped-def]
    """POST a job spec; assert it was accepted and return the new job's id."""
    response = client.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
