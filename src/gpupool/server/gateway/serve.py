"""Serving the gateway on its own port, in a background thread of ``gpupool up``.

``GatewayServer(app).start(host, port)`` binds the socket itself (so a taken port is an
``OSError`` raised at once, in the caller's thread), runs uvicorn on a daemon thread with
lifespan on and no signal handlers (the main server owns SIGINT/SIGTERM), and returns once
the server accepts connections. ``stop()`` closes the listening socket, lets requests in
flight finish (WebSockets are closed, long streams are cut after ``grace_s``), runs the
app's shutdown and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

STARTUP_TIMEOUT_S = 15.0


class _Quiet(uvicorn.Server):
    """uvicorn that never touches signal handlers, whatever thread it runs in."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # protocol says TCP; with 0, each answer on a kept-alive connection waited ~40 ms for the
    # client's delayed ACK (bench/results/notebooks.md)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = ("is another gpupool up (or another program) using it? pick another "
                "gateway port" if exc.errno == errno.EADDRINUSE else "check the address")
        raise OSError(exc.errno, f"the gateway can't listen on {host}:{port}: "
                      f"{exc.strerror}; {hint}") from exc
    sock.setblocking(False)
    return sock


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency on Linux; measured in
    bench/results/services.md), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class GatewayServer:
    """One gateway app served by uvicorn on a daemon thread. Start once, stop once."""

    def __init__(self, app: ASGIApp, *, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None, grace_s: int = 5,
                 log_level: str = "warning") -> None:
        self._app = app
        self._ssl = (ssl_certfile, ssl_keyfile)
        self._grace_s = grace_s
        self._log_level = log_level
        self._server: _Quiet | None = None
        self._thread: threading.Thread | None = None
        self._url = ""
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """``http(s)://host:port`` actually listened on (the real port when 0 was asked)."""
        if not self._url:
            raise RuntimeError("the gateway is not started")
        return self._url

    def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (only there) and return once serving. Raises ``OSError``
        when the address can't be bound, ``RuntimeError`` when the app fails to start."""
        if self._thread is not None:
            raise RuntimeError("the gateway server was already started")
        sock = _bind(host, port)
        bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, host=host, port=bound_port, ws="websockets-sansio", lifespan="on",
            log_level=self._log_level, access_log=False, server_header=False, proxy_headers=False,
            date_header=False, timeout_graceful_shutdown=self._grace_s,
            ssl_certfile=self._ssl[0], ssl_keyfile=self._ssl[1])
        server = self._server = _Quiet(config)
        self._thread = threading.Thread(target=self._run, args=(server, sock),
                                        name="gpupool-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                self._thread.join(self._grace_s)
                sock.close()
                raise RuntimeError(f"the gateway failed to start on {host}:{bound_port}"
                                   + (f": {self._failure!r}" if self._failure else ""))
            time.sleep(0.01)
        scheme = "https" if self._ssl[0] else "http"
        shown = f"[{host}]" if ":" in host else host
        self._url = f"{scheme}://{shown}:{bound_port}"

    def _run(self, server: _Quiet, sock: socket.socket) -> None:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # SystemExit on a failed lifespan startup, too
            self._failure = exc
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop gracefully and wait for the serving thread. Safe to call twice."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(self._grace_s + 10.0)
