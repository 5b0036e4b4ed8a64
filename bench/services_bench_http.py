"""The client side of the services benchmark (bench/services_bench.py): a minimal HTTP/1.1
client on one kept-alive connection (TCP or a Unix socket) for latencies, an asyncio one
with many kept-alive connections for requests/s at saturation, and Debian's nginx set up as
a plain reverse proxy to one address.

The clients are raw sockets with pre-built requests so that what they add to each figure is
small and the same for every target (an HTTP library in Python costs more per request than
the proxies being compared)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Target:
    """Where to send ``GET path``: TCP ``host:port`` or a Unix socket ``uds``."""

    name: str
    path: str
    host: str = "127.0.0.1"
    port: int = 0
    uds: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def request(self) -> bytes:
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port or 80}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def connect(self) -> socket.socket:
        if self.uds:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.uds)
        else:
            sock = socket.create_connection((self.host, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(30)
        return sock


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    raise ValueError(f"no Content-Length in {head[:200]!r}")


class Connection:
    """One kept-alive connection to a target; ``get()`` sends its request and reads the whole
    answer (Content-Length bodies only), returning the status code."""

    def __init__(self, target: Target) -> None:
        self._sock = target.connect()
        self._request = target.request()
        self._buf = b""

    def get(self) -> int:
        self._sock.sendall(self._request)
        while b"\r\n\r\n" not in self._buf:
            self._buf += self._recv()
        head, _, rest = self._buf.partition(b"\r\n\r\n")
        length = _content_length(head)
        while len(rest) < length:
            rest += self._recv()
        self._buf = rest[length:]
        return int(head.split(b" ", 2)[1])

    def _recv(self) -> bytes:
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def close(self) -> None:
        self._sock.close()


def latencies_ms(target: Target, n: int, warmup: int = 50) -> list[float]:
    """``n`` sequential requests on one kept-alive connection (after ``warmup`` more): each
    one's time in ms. Raises on any answer but 200."""
    conn = Connection(target)
    try:
        for _ in range(warmup):
            conn.get()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            status = conn.get()
            out.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise RuntimeError(f"{target.name}: answered {status}")
        return out
    finally:
        conn.close()


async def _open(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if target.uds:
        return await asyncio.open_unix_connection(target.uds)
    return await asyncio.open_connection(target.host, target.port)


async def _worker(target: Target, until: float, counts: list[int],
                  latencies: list[float]) -> None:
    """Requests back to back on one connection until ``until``; a connection the server
    closes counts as an error (``counts[2]``) and is opened again."""
    reader, writer = await _open(target)
    request = target.request()
    try:
        while (t0 := time.perf_counter()) < until:
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_content_length(head))
            except (asyncio.IncompleteReadError, ConnectionError):
                counts[2] += 1
                writer.close()
                reader, writer = await _open(target)
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            counts[0 if head.split(b" ", 2)[1] == b"200" else 1] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass(frozen=True)
class Saturation:
    """What ``saturate`` measured: answers 200 per second, answers that were not 200,
    connections the server closed, and each request's time in ms (from its write to the end
    of its answer)."""

    rps: float
    not_200: int
    closed: int
    latencies_ms: list[float]


def saturate(target: Target, connections: int, seconds: float) -> Saturation:
    """``connections`` kept-alive connections, each sending its next request as soon as the
    last one is answered, for ``seconds`` (one client process, asyncio)."""
    counts = [0, 0, 0]
    latencies: list[float] = []

    async def main() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_worker(target, until, counts, latencies)
                               for _ in range(connections)))

    t0 = time.perf_counter()
    asyncio.run(main())
    return Saturation(counts[0] / (time.perf_counter() - t0), counts[1], counts[2],
                      latencies)


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream replica {{ server {upstream}; keepalive 32; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://replica;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def nginx_available() -> str:
    """"" when ``nginx`` can be run (installed with apt when absent and we are root with
    apt-get), else why not."""
    if shutil.which("nginx"):
        return ""
    if shutil.which("apt-get") is None:
        return "nginx is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "nginx is not installed and installing it needs root"
    done = subprocess.run("apt-get update -qq && apt-get install -y -qq nginx-light "
                          "|| apt-get install -y -qq nginx", shell=True,
                          capture_output=True, text=True, check=False)
    if shutil.which("nginx") is None:
        return f"nginx could not be installed with apt: {done.stderr.strip()[-300:]}"
    return ""


def nginx_version() -> str:
    done = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().removeprefix("nginx version: ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def nginx_proxy(upstream: str) -> Iterator[int]:
    """nginx (one worker, upstream keep-alive, no buffering, no access log) proxying to
    ``upstream`` (``host:port``) on a free loopback port, yielded; stopped after."""
    where = Path(tempfile.mkdtemp(prefix="gpsvc-nginx"))
    port = free_port()
    (where / "nginx.conf").write_text(NGINX_CONF.format(dir=where, upstream=upstream,
                                                        port=port))
    proc = subprocess.Popen(["nginx", "-p", str(where), "-c", str(where / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx did not start: {err.strip()}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(where, ignore_errors=True)
