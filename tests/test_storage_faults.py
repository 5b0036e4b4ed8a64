"""Storage faults on a real server: a full disk answers 507 naming the data dir, an unreachable
PostgreSQL answers 503 with Retry-After; both recover without a restart (api/storage_errors.py).

The disk is a small tmpfs mounted for the test (root only); PostgreSQL is reached through a
TCP proxy in this file, cut and restored at will. No mocks of the database."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from gpupool.server.api.storage_errors import storage_fault
from gpupool.server.db.database import Database
from server_harness import (
    PG_DSN,
    Server,
    free_port,
    postgres_available,
    submit,
    wait_for,
)

FINAL = {"succeeded", "failed", "cancelled"}
GPUS = "1xA100-80GB"


def gated(gate: Path) -> list[str]:
    """A command that ends (exit 0) once ``gate`` exists."""
    script = ("import pathlib,time\n"
              f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n")
    return [sys.executable, "-c", script]


def phase(client: httpx.Client, job_id: str) -> str:
    return str(client.get(f"/jobs/{job_id}").json()["phase"])


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# -- disk full (SQLite on a small tmpfs) ----------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs for the full disk: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full disk (root needed): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its filesystem has no byte left; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    stat = os.statvfs(directory)
    assert stat.f_bavail == 0, stat
    return filler


def test_a_full_data_dir_answers_507_and_recovers_once_space_is_back(
    small_disk: Path, tmp_path: Path,
) -> None:
    home = small_disk / "home"
    home.mkdir()
    server_log = tmp_path / "server.out"  # outside the full disk, so the log survives
    (home / "server.out").symlink_to(server_log)
    server = Server(home, "", GPUS)
    gate = tmp_path / "gate"
    try:
        server.start()
        with server.client() as c:
            early = submit(c, command=gated(gate))
            wait_for(lambda: phase(c, early) == "running")
            filler = fill(small_disk)

            accepted = [early]
            for _ in range(20):  # SQLite may still fit a row in the WAL it already has
                answer = c.post("/jobs", json={"command": ["true"]})
                if answer.status_code != 201:
                    break
                accepted.append(str(answer.json()["id"]))
            assert answer.status_code == 507, answer.text
            detail = answer.json()["detail"]
            assert f"data dir {home} is full" in detail, detail
            assert "free space there" in detail and "nothing of it was saved" in detail, detail
            assert "Retry-After" not in answer.headers

            # Reads still work, and the refused job left no row behind.
            listing = c.get("/jobs")
            assert listing.status_code == 200, listing.text
            assert sorted(j["id"] for j in listing.json()) == sorted(accepted)
            assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200

            # The gated job ends while the disk is full: its end cannot be written yet.
            gate.touch()
            wait_for(lambda: "could not record its end" in log_text(server_log))
            assert phase(c, early) == "running"

            filler.unlink()
            later = submit(c, command=["true"])  # same server process: no restart
            wait_for(lambda: phase(c, later) == "succeeded")
            # Recorded once space is back, once. (Its shim could not write the exit code in
            # the full run dir either, so the outcome itself may be "unknown".)
            view = wait_for(lambda: (v := c.get(f"/jobs/{early}").json())["phase"] in FINAL
                            and v)
            assert [e["phase"] for e in view["events"]].count(view["phase"]) == 1, view
            assert server.proc is not None and server.proc.poll() is None
    finally:
        gate.touch()
        server.stop()


# -- database unavailable (PostgreSQL behind a proxy) ---------------------------------------


class Proxy:
    """A TCP proxy on a free loopback port to ``target``. ``cut`` closes every connection and
    refuses new ones (nothing listens); ``restore`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[Proxy, str]]:
    reason = postgres_available()
    if reason is not None:
        pytest.skip(reason)
    import psycopg

    schema = "gp_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    proxy = Proxy(("127.0.0.1", 5432))
    try:
        yield proxy, (f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
                      f"?options=-csearch_path%3D{schema}")
    finally:
        proxy.cut()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_an_unreachable_database_answers_503_and_recovers_without_restart(
    proxied_postgres: tuple[Proxy, str], tmp_path: Path,
) -> None:
    proxy, url = proxied_postgres
    server = Server(tmp_path / "home", url, GPUS)
    server.home.mkdir()
    server_log = server.home / "server.out"
    gate = tmp_path / "gate"
    try:
        server.start()
        with server.client() as c:
            c.timeout = httpx.Timeout(20)  # a hung request fails the test, not the suite
            early = submit(c, command=gated(gate))
            wait_for(lambda: phase(c, early) == "running")

            proxy.cut()
            where = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
            for answer in (c.get("/jobs"), c.post("/jobs", json={"command": ["true"]}),
                           c.get(f"/jobs/{early}"),
                           httpx.get(server.url + "/healthz", timeout=20)):
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "5", answer.headers
                detail = answer.json()["detail"]
                assert f"the database {where} is unavailable" in detail, detail
                assert "schema" not in detail and "search_path" not in detail, detail
            gate.touch()  # the job ends while its row cannot be written
            wait_for(lambda: "scheduler loop step failed" in log_text(server_log))
            assert server.proc is not None and server.proc.poll() is None

            proxy.restore()
            wait_for(lambda: c.get("/jobs").status_code == 200)
            later = submit(c, command=["true"])
            wait_for(lambda: phase(c, later) == "succeeded")
            wait_for(lambda: phase(c, early) == "succeeded")
            wait_for(lambda: "scheduler loop steps succeed again" in log_text(server_log))
            assert server.proc.poll() is None
        # The loop logged the outage once per distinct failure, not once per tick.
        assert log_text(server_log).count("scheduler loop step failed") <= 3
    finally:
        gate.touch()
        server.stop()


# -- the classifier on real errors ----------------------------------------------------------


def test_details_name_the_database_and_the_full_directory_never_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"postgresql://gp:s3cret-pw@127.0.0.1:{port}/pool?options=-csearch_path%3Dx"
    db = Database(url)
    try:
        with pytest.raises(OperationalError) as refused, db.session() as s:  # nothing listens there
            s.connection()
    finally:
        db.dispose()
    fault = storage_fault(refused.value, db.url, tmp_path)
    assert fault is not None and (fault.status, fault.retry_after) == (503, 5), fault
    assert f"the database postgresql://gp@127.0.0.1:{port}/pool is" in fault.detail, fault.detail
    assert "s3cret" not in fault.detail and "search_path" not in fault.detail, fault.detail

    home = tmp_path / "home"
    full = OSError(errno.ENOSPC, "No space left on device", str(home / "traces" / "t.csv"))
    fault = storage_fault(full, "sqlite:///" + str(home / "gpupool.db"), home)
    assert fault is not None and (fault.status, fault.retry_after) == (507, None), fault
    assert f"the server's data dir {home} is full" in fault.detail, fault.detail
    assert storage_fault(OSError(errno.EACCES, "denied"), db.url, home) is None
