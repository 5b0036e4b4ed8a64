"""Start real `gpupool up` processes for tests, on SQLite or on the local PostgreSQL."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
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
    work_dir: Path = field(default_factory=lambda: job_reachable_dir("gpw"))
    """GPUPOOL_WORK_DIR: jobs run as other accounts, which can't pass pytest's 0700 tmp."""
    isolated: bool = False
    """False (most tests): the admin's jobs run as root, unsandboxed, by the operator's
    explicit choice (GPUPOOL_ADMIN_UNIX_USER=root, GPUPOOL_SANDBOX=none), so that tests may
    hand jobs files in pytest's private tmp dirs. True: as a real deployment (gp-admin, the
    sandbox): the isolation tests."""
    host: str = "127.0.0.1"
    tls_cert: str = ""  # with tls_key: serve HTTPS; the (self-signed) cert is also the CA file
    tls_key: str = ""

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{self.host}:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.tls_cert) if self.tls_cert else True

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(GPUPOOL_HOME=str(self.home), GPUPOOL_URL=self.url,
                   GPUPOOL_WORK_DIR=str(self.work_dir))
        env.pop("GPUPOOL_FAKE_GPUS", None)
        if self.token:
            env["GPUPOOL_TOKEN"] = self.token
        if not self.isolated:
            env.update(GPUPOOL_ADMIN_UNIX_USER="root", GPUPOOL_SANDBOX="none")
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
            "--gateway-port",  # any free port: servers of concurrent tests never collide
            "0",
            *self.extra_args,
        ]
        if self.host != "127.0.0.1":
            args += ["--host", self.host]
        if self.tls_cert:
            args += ["--tls-cert", self.tls_cert, "--tls-key", self.tls_key]
        if self.database_url:
            args += ["--database-url", self.database_url]
        _wait_exiting(self.home)  # a stopped server on this data dir may still be exiting
        log = (self.home / "server.out").open("ab")
        self.home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.home / 'server.out').read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1,
                             verify=self.verify).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("server did not start within 60 s")
        self.token = (self.home / "admin.token").read_text().strip()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then return once the server says it stopped (its last line, printed once
        the API, the loop, the gateway and the watches have stopped) or has exited. What is
        left then is the interpreter's own exit (about half a second of garbage collection
        on 2 cores): the process is reaped in the background, SIGKILLed if it is still there
        15 s after the SIGTERM, as before, and the next ``start`` on the same data dir waits
        for it (it holds the data dir's lock until then)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        out = self.home / "server.out"
        seen = out.stat().st_size if out.exists() else 0
        proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while proc.poll() is None:
            if _said_stopped(out, seen):
                _reap_later(self.home, proc, deadline)
                return
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                return
            time.sleep(0.02)

    def wait_exited(self) -> None:
        """Wait until the process of the last ``stop`` has really exited."""
        _wait_exiting(self.home)

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=30,
            verify=self.verify,
        )


STOP_TIMEOUT_S = 15.0
"""A server still running this long after its SIGTERM is SIGKILLed."""

_exiting: dict[Path, list[subprocess.Popen[bytes]]] = {}
"""Stopped servers whose processes may still be exiting, by data dir."""
_exiting_lock = threading.Lock()


def _said_stopped(out: Path, offset: int) -> bool:
    """Whether ``gpupool up`` wrote its farewell (``gpupool stopped (...)``) to ``out``
    after ``offset``."""
    try:
        with out.open("rb") as f:
            f.seek(offset)
            return b"gpupool stopped (" in f.read()
    except OSError:
        return False


def _reap_later(home: Path, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Reap ``proc`` in the background; SIGKILL it at ``deadline`` (time.monotonic)."""
    def reap() -> None:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    with _exiting_lock:
        _exiting.setdefault(home.resolve(), []).append(proc)
    threading.Thread(target=reap, name=f"reap-{proc.pid}", daemon=True).start()


def _wait_exiting(home: Path | None = None) -> None:
    """Wait for the stopped servers of ``home`` (None: of every data dir) to exit."""
    with _exiting_lock:
        if home is None:
            procs = [p for ps in _exiting.values() for p in ps]
            _exiting.clear()
        else:
            procs = _exiting.pop(home.resolve(), [])
    for proc in procs:
        try:
            proc.wait(timeout=STOP_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


atexit.register(_wait_exiting)  # leave no server behind the test session


def job_reachable_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that every account may pass through (0711): pytest's own
    tmp dirs are 0700, and jobs run as their owners' accounts when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o711)
    atexit.register(shutil.rmtree, path, True)  # pytest's own tmp dirs are pruned; these not
    return path


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """``server`` started (its home made), then stopped and its work dir removed."""
    server.home.mkdir(parents=True, exist_ok=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.work_dir, ignore_errors=True)


def stand_in_devices(root: Path, gpus: int = 4) -> Path:
    """``root/dev`` with character devices named like NVIDIA's (``nvidia0``… and
    ``nvidiactl``, each a /dev/null: 1,3), for GPUPOOL_DEV_DIR."""
    import stat

    folder = root / "dev"
    folder.mkdir()
    for name in [f"nvidia{i}" for i in range(gpus)] + ["nvidiactl"]:
        os.mknod(folder / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(folder, 0o755)
    return folder


def new_user(admin: httpx.Client, team: str, quota_gpus: float = 2) -> tuple[str, str]:
    """(token, Unix account) of a new user of a new team ``team``, made through ``admin``."""
    import uuid

    assert admin.post("/teams", json={"name": team, "quota_gpus": quota_gpus}
                      ).status_code == 201
    made = admin.post("/users", json={"name": f"u{uuid.uuid4().hex[:6]}", "team": team})
    assert made.status_code == 201, made.text
    name = made.json()["name"]
    token = admin.post("/tokens", json={"user": name}).json()["token"]
    return str(token), str(made.json()["unix_user"])


def remove_created_accounts(server: Server) -> None:
    """Remove the Unix accounts ``server`` (SQLite) created for the users a test made
    through it (the admin's ``gp-admin`` stays: other servers of the session share it)."""
    import sqlite3

    from gpupool.executors import accounts

    # from the database: the API may refuse by then (a fuzzer may revoke its own token)
    with contextlib.closing(sqlite3.connect(server.home / "gpupool.db")) as db:
        rows = db.execute("SELECT name, unix_user FROM users WHERE unix_created").fetchall()
    for name, unix in rows:
        if unix and name != "admin":
            accounts.remove(unix, name.split("~deleted-")[0])


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


def make_server(backend: str, tmp_path: Path, fake_gpus: str,
                extra_env: dict[str, str] | None = None,
                extra_args: tuple[str, ...] = ()) -> Iterator[Server]:
    """Yield a started server on ``backend`` (with ``extra_env`` in its environment and
    ``extra_args`` after `gpupool up`'s own, e.g. another ``--tick``: the last one wins);
    drop its PostgreSQL schema afterwards."""
    url = ""
    schema = ""
    if backend == "postgres":
        import psycopg

        schema = "gp_" + uuid.uuid4().hex[:12]
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    server = Server(tmp_path / "home", url, fake_gpus, extra_env=dict(extra_env or {}),
                    extra_args=extra_args)
    server.home.mkdir(parents=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        kill_leftover_jobs(server.home)
        shutil.rmtree(server.work_dir, ignore_errors=True)
        if schema:
            import psycopg

            server.wait_exited()  # its connections are gone before the schema is
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def kill_leftover_jobs(home: Path) -> None:
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
