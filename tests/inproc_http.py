"""The in-process server (``inprocess_api.InProcessServer``: the real app, controller and
database, a scripted executor, the loop stepped by hand) behind real HTTP: uvicorn serves its
app from a thread of this process on a free port of 127.0.0.1, as `gpupool up` serves it
(with a ``Stopper``, so /api/v1/server answers). For tests whose clients need a URL: httpx
clients (``Served.client``, as ``server_harness.Server.client``), the SDK, the CLI (its
commands run in this process: ``Served.cli``), a client address of 127.0.0.1, and requests
parsed by uvicorn as a real server parses them. Starting one costs milliseconds, not the
seconds of a `gpupool up` process.

``logged_tracebacks``: what a real server's log would show as a traceback (log records with
an exception, uvicorn's "Exception in ASGI application" included, and exceptions that ended
a thread); ``Served.tracebacks`` holds those of its life.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

from gpupool.server.db.database import Database
from gpupool.server.stopping import Stopper
from inprocess_api import InProcessServer


@contextlib.contextmanager
def logged_tracebacks() -> Iterator[list[str]]:
    """Collect, meanwhile, log records with an exception (any logger) and exceptions that
    ended a thread, one line each."""
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info:
                seen.append(f"{record.name}: {record.getMessage()}: {record.exc_info[1]!r}")

    handler, root = Catch(logging.ERROR), logging.getLogger()
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        seen.append(f"thread {args.thread}: {args.exc_value!r}")
        previous(args)

    root.addHandler(handler)
    threading.excepthook = hook
    try:
        yield seen
    finally:
        threading.excepthook = previous
        root.removeHandler(handler)


class Served:
    """An ``InProcessServer`` served at ``url`` (see the module); ``server`` is it."""

    def __init__(self, server: InProcessServer, url: str, tracebacks: list[str]) -> None:
        self.server = server
        self.url = url
        self.tracebacks = tracebacks
        self.token = server.token
        """The admin's token (the one `gpupool up` writes to its token file)."""

    @property
    def home(self) -> Path:
        return self.server.settings.home

    @property
    def db(self) -> Database:
        return self.server.db

    @property
    def env(self) -> dict[str, str]:
        """What a client's environment names: this server, as the admin."""
        return {"GPUPOOL_HOME": str(self.home), "GPUPOOL_URL": self.url,
                "GPUPOOL_TOKEN": self.token}

    def client(self, token: str | None = None) -> httpx.Client:
        """An httpx client of the API (base URL .../api/v1), as ``token`` (the admin's)."""
        # verify=False: plain http, so no certificate store to load (~30 ms a client)
        return httpx.Client(base_url=self.url + "/api/v1",
                            headers={"Authorization": f"Bearer {token or self.token}"},
                            timeout=30, verify=False)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`gpupool ARGS` as the admin (``env``), run in this process (Typer's runner): its
        exit code, stdout and stderr, as the command's own process would give them (an
        unhandled exception: exit 1 and its traceback on stderr)."""
        from typer.testing import CliRunner

        from gpupool.cli.main import app

        done = CliRunner().invoke(app, list(args), env=self.env)
        stderr = done.stderr
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            stderr += "".join(traceback.format_exception(done.exception))
        return subprocess.CompletedProcess(["gpupool", *args], done.exit_code, done.stdout,
                                           stderr)

    def step(self, seconds: float = 0.0) -> None:
        """One pass of the loop, ``seconds`` later (``InProcessServer.step``)."""
        self.server.step(seconds)


@contextlib.contextmanager
def served(server: InProcessServer) -> Iterator[Served]:
    """Serve ``server``'s app over HTTP until the block ends (see the module)."""
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so (uvicorn's own
    # do), else every keep-alive request waits ~40 ms for a delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: uvicorn configures no logging, its errors reach the root logger
    http = uvicorn.Server(uvicorn.Config(server.app, log_level="warning", log_config=None))
    if getattr(server.app.state, "stopper", None) is None:
        server.app.state.stopper = Stopper(server.db, server.controller,
                                           lambda: setattr(http, "should_exit", True))
    with logged_tracebacks() as tracebacks:
        thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]},
                                  name="inproc-uvicorn", daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not http.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start")
                time.sleep(0.005)
            yield Served(server, f"http://127.0.0.1:{port}", tracebacks)
        finally:
            http.should_exit = True
            thread.join(timeout=30)
            sock.close()
