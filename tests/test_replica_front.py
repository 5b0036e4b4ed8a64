"""The replica front (:mod:`gpupool.executors.replica_front`) as a real process in front of a
real tiny HTTP server: requests over its Unix socket reach the server (keep-alive, streamed
chunks), a 502 marked ``x-gpupool-unreached`` answers before the server listens, a SIGTERM
reaches the server while a stream in flight finishes and no new connection is accepted, the
front exits with the server's code and removes its socket, and a missing command exits 127.
Then the private network of the sandbox (``--unshare-net``, run as an unprivileged account,
as the local executor runs bwrap): no host port is reachable from inside, no port inside is
reachable from the host, and the front inside it is reachable from the host over its socket.
"""

from __future__ import annotations

import ast
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpupool.executors import accounts, replica_front
from gpupool.executors.base import LaunchError, LaunchSpec
from gpupool.executors.local import LocalExecutor
from gpupool.executors.sandbox import Sandbox, detect
from server_harness import job_reachable_dir, wait_for

FRONT_FILE = replica_front.__file__
FRONT_MODULE = [sys.executable, "-I", "-m", "gpupool.executors.replica_front"]
SERVICE = r'''
import http.server, os, signal, sys, threading, time

CONTROL = sys.argv[1]  # a directory of gate files ("-": none)
active = 0
lock = threading.Lock()


def wait(name):
    while CONTROL != "-" and not os.path.exists(os.path.join(CONTROL, name)):
        time.sleep(0.02)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, body, code=200):
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self):
        global active
        if self.path == "/hello":
            self.send(f"hello via {self.client_address[1]}".encode())
        elif self.path == "/stream":
            with lock:
                active += 1
            try:
                self.send_response(200)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for i, word in enumerate([b"one\n", b"two\n", b"three\n"]):
                    if i == 1:
                        wait("go")  # the client saw the first chunk before the rest exists
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(word), word))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            finally:
                with lock:
                    active -= 1
        elif self.path == "/quit":
            self.send(b"bye")
            os._exit(5)
        else:
            self.send(b"no such page", 404)

    def do_POST(self):
        self.send(self.rfile.read(int(self.headers.get("content-length", 0))))


def on_term(signum, frame):  # may come twice (the group's and the front's): reentrant
    os.write(1, b"got TERM\n")

    def finish():  # a graceful stop: what is in flight ends first
        while True:
            with lock:
                if active == 0:
                    os._exit(7)
            time.sleep(0.02)

    threading.Thread(target=finish, daemon=True).start()


signal.signal(signal.SIGTERM, on_term)
wait("listen")
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
print("listening", flush=True)
server.serve_forever()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rf", dir="/tmp"))  # AF_UNIX paths are short
    (path / "service.py").write_text(SERVICE)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Front:
    """The front as a subprocess of the test, its output in files."""

    def __init__(self, folder: Path, command: list[str]) -> None:
        self.socket = folder / "s"
        self.out, self.err = folder / "out", folder / "err"
        self.port = free_port()
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [*FRONT_MODULE, "--socket", str(self.socket), "--port", str(self.port), "--",
                 *command], stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=folder,
                start_new_session=True)  # a group of its own, as under the shim

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                            base_url="http://replica", timeout=20)

    def listening(self) -> None:
        wait_for(lambda: "gpupool replica front:" in self.err.read_text(), timeout=20)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def fronts() -> Iterator[list[Front]]:
    started: list[Front] = []
    yield started
    for front in started:  # the front and whatever its command left (one group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(front.proc.pid, signal.SIGKILL)
        front.proc.wait()


def service(folder: Path, fronts: list[Front], gated: bool = False) -> Front:
    front = Front(folder, [sys.executable, str(folder / "service.py"), str(folder)])
    fronts.append(front)
    if not gated:
        (folder / "listen").touch()
    front.listening()
    return front


def test_requests_keep_alive_and_streams_go_through_the_socket(
        folder: Path, fronts: list[Front]) -> None:
    front = service(folder, fronts)
    assert oct(front.socket.stat().st_mode & 0o777) == "0o600"
    assert f"{front.socket} -> 127.0.0.1:{front.port}" in front.err.read_text()
    with front.client() as client:
        first = wait_for(lambda: _ok(client, "/hello"), timeout=20)
        second = client.get("/hello")
        assert second.status_code == 200
        assert first.text == second.text  # the same TCP connection: keep-alive went through
        echoed = client.post("/echo", content=b"x" * 300_000)
        assert echoed.status_code == 200 and echoed.content == b"x" * 300_000
        with client.stream("GET", "/stream") as response:
            chunks = response.iter_raw()
            head = next(chunks)
            assert head.startswith(b"one\n")
            (folder / "go").touch()
            assert head + b"".join(chunks) == b"one\ntwo\nthree\n"
    assert front.err.read_text().count("\n") == 1  # one line at start, nothing per request


def _ok(client: httpx.Client, path: str) -> httpx.Response | None:
    try:
        response = client.get(path)
    except httpx.TransportError:
        return None
    return response if response.status_code == 200 else None


def test_before_the_command_listens_the_front_answers_an_unreached_502(
        folder: Path, fronts: list[Front]) -> None:
    front = service(folder, fronts, gated=True)
    with front.client() as client:
        for response in (client.get("/hello"), client.post("/echo", content=b"y" * 100_000)):
            assert response.status_code == 502
            assert response.headers["x-gpupool-unreached"] == "1"
            assert response.headers["connection"] == "close"
            assert response.json() == {
                "detail": f"the service is not listening on its port {front.port} yet"}
        (folder / "listen").touch()
        assert wait_for(lambda: _ok(client, "/hello"), timeout=20).text.startswith("hello")


def test_sigterm_reaches_the_command_the_stream_in_flight_ends_and_its_code_is_the_fronts(
        folder: Path, fronts: list[Front]) -> None:
    front = service(folder, fronts)
    with front.client() as client:
        wait_for(lambda: _ok(client, "/hello"), timeout=20)
        with client.stream("GET", "/stream") as response:
            chunks = response.iter_raw()
            head = next(chunks)
            front.proc.send_signal(signal.SIGTERM)  # the front alone: it passes it on
            wait_for(lambda: "got TERM" in front.out.read_text(), timeout=20)
            with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
                probe.connect(str(front.socket))  # no longer accepting
            (folder / "go").touch()
            assert head + b"".join(chunks) == b"one\ntwo\nthree\n"
    assert front.wait() == 7
    assert not front.socket.exists()


def test_the_front_exits_with_the_commands_code_and_removes_its_socket(
        folder: Path, fronts: list[Front]) -> None:
    front = service(folder, fronts)
    with front.client() as client:
        wait_for(lambda: _ok(client, "/hello"), timeout=20)
        assert client.get("/quit").text == "bye"
    assert front.wait() == 5
    assert not front.socket.exists()
    killed = Front(folder, ["/bin/sh", "-c", "kill -KILL $$"])
    fronts.append(killed)
    assert killed.wait() == 128 + signal.SIGKILL


def test_a_command_that_does_not_exist_exits_127_with_a_message(
        folder: Path, fronts: list[Front]) -> None:
    front = Front(folder, [str(folder / "no-such-server")])
    fronts.append(front)
    assert front.wait() == 127
    assert "cannot start" in front.err.read_text()
    assert "no-such-server" in front.err.read_text()
    assert not front.socket.exists()


def test_the_front_imports_the_standard_library_only() -> None:
    """It runs under ``-I`` with whatever interpreter the sandbox has, as a file too."""
    tree = ast.parse(Path(FRONT_FILE).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert {name.split(".")[0] for name in names} <= {*sys.stdlib_module_names, "__future__"}


# -- the private network of the sandbox ------------------------------------------------------

INSIDE = r'''
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
    print("connected", flush=True)
except ConnectionRefusedError:
    print("refused", flush=True)
server = socket.create_server(("127.0.0.1", int(sys.argv[2])))
print("listening", flush=True)
sys.stdin.read()
'''


def working_sandbox() -> Sandbox:
    sandbox = detect("auto")
    if not sandbox.enabled:
        pytest.skip(f"bubblewrap cannot run here: {sandbox.missing}")
    return sandbox


def test_wrap_asks_bwrap_for_a_network_of_its_own_only_when_told() -> None:
    account = accounts.current()
    sandbox = Sandbox(bwrap="/usr/bin/bwrap", missing="")
    assert "--unshare-net" in sandbox.wrap(["x"], account, private_network=True)
    assert "--unshare-net" not in sandbox.wrap(["x"], account)
    assert Sandbox().wrap(["x"], account, private_network=True) == ["x"]  # no sandbox


@pytest.mark.parametrize("private", [True, False], ids=["private", "host-network"])
def test_a_private_network_reaches_no_host_port_and_exposes_none(private: bool) -> None:
    sandbox = working_sandbox()
    root = os.geteuid() == 0  # bwrap runs as an unprivileged account, as in the executor
    account = accounts.Account.of(pwd.getpwuid(65534)) if root else accounts.current()
    as_account: dict[str, object] = (
        {"user": account.uid, "group": account.gid, "extra_groups": []} if root else {})
    inner = free_port()
    with socket.create_server(("127.0.0.1", 0)) as host_server:
        host = host_server.getsockname()[1]
        argv = sandbox.wrap([sys.executable, "-I", "-c", INSIDE, str(host), str(inner)],
                            account, private_network=private)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd="/", **as_account)  # type: ignore[call-overload]
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().decode().strip()
            assert first == ("refused" if private else "connected"), proc.stderr.read()
            assert proc.stdout.readline().decode().strip() == "listening"
            if private:
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", inner), timeout=10).close()
            else:
                socket.create_connection(("127.0.0.1", inner), timeout=10).close()
        finally:
            proc.communicate(timeout=20)
    assert proc.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another account needs root "
                    "(CI runs as root)")
def test_the_front_in_a_private_network_sandbox_is_reached_through_its_socket_only() -> None:
    sandbox = working_sandbox()
    name, owner = "gp-test-front", "test-front"
    accounts.ensure(name, owner)
    place = job_reachable_dir("gpf")
    (place / "service.py").write_text(SERVICE)
    os.chmod(place / "service.py", 0o644)
    port, job_dir = free_port(), place / "j"
    spec = LaunchSpec(
        job_id="front", attempt=1, run_dir=str(place / "run"), run_as=name, owner=owner,
        job_dir=str(job_dir), workdir=str(place), private_network=True,
        command=[sys.executable, "-I", FRONT_FILE, "--socket", str(job_dir / "s"),
                 "--port", str(port), "--", sys.executable, str(place / "service.py"), "-"])
    executor = LocalExecutor(sandbox=sandbox)
    handle = executor.launch(spec)
    try:
        transport = httpx.HTTPTransport(uds=str(job_dir / "s"))
        with httpx.Client(transport=transport, base_url="http://replica", timeout=20) as client:
            response = wait_for(lambda: executor.poll(handle) or _ok(client, "/hello"), 30)
            assert isinstance(response, httpx.Response), Path(handle.log_path).read_text()
            assert response.text.startswith("hello")
        with pytest.raises(ConnectionRefusedError):  # its port is not the host's
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
        executor.terminate(handle)
        outcome = wait_for(lambda: executor.poll(handle), timeout=30)
        log = Path(handle.log_path).read_text()
        assert outcome.exit_code == 7 and "got TERM" in log, log
    finally:
        executor.kill(handle)
        wait_for(lambda: executor.poll(handle), timeout=20)
        accounts.remove(name, owner)


def test_a_ray_pool_refuses_a_private_network(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from gpupool.executors.ray_executor import RayPool

    spec = LaunchSpec(job_id="r", attempt=1, command=["true"], run_dir=str(tmp_path / "r"),
                      private_network=True)
    with pytest.raises(LaunchError, match="replicas run on the server's own node"):
        RayPool(tmp_path).launch(spec)
