"""``gpupool down``: stop the server (admin only), choosing what happens to running jobs.

Exit codes as every server command (``client_opts``): 0 once the server stopped (or, with
``--no-wait``, accepted to stop), 2 for a refusal (not an admin: 403) or wrong options, 3
when no server answers, 130 when interrupted while waiting (the server goes on stopping).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gpupool.cli.client_opts import EXIT_INTERRUPTED, Token, Url, connect, err, fail, handled
from gpupool.schemas.server import ServerState, StopMode
from gpupool.sdk import ApiError, Client
from gpupool.sdk._wire import API, Call
from gpupool.sdk.config import data_dir

POLL_S = 0.3
EXIT_WAIT_S = 30.0
"""How long to wait, once the API is gone, for the local server process to exit."""


def down(
    drain: Annotated[bool, typer.Option(
        "--drain",
        help="Start no new job, wait for the running ones to end, then stop. Pending jobs "
        "stay queued. A job that never ends (a notebook, a service) keeps the server up: "
        "`gpupool down` again stops it at once.")] = False,
    cancel_jobs: Annotated[bool, typer.Option(
        "--cancel-jobs",
        help="Cancel the running jobs (SIGTERM, SIGKILL after each one's grace period), wait "
        "for them to end, then stop. Pending jobs stay queued.")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait",
        help="Wait until the server has stopped (the default), or return once it accepted "
        "to stop.")] = True,
    url: Url = None,
    token: Token = None,
) -> None:
    """Stop the gpupool server (admin only).

    Without options it stops at once: running jobs keep running, and the next `gpupool up`
    on the same data dir re-adopts them and records how they end. Pending jobs stay queued
    whatever the option. Needs an admin token; on the server's machine the account that
    started it has one (the data dir's admin.token, found without options). Ctrl-C on
    `gpupool up` stops it as `gpupool down` does."""
    if drain and cancel_jobs:
        raise fail("give --drain or --cancel-jobs, not both")
    mode = StopMode.DRAIN if drain else StopMode.CANCEL if cancel_jobs else StopMode.LEAVE
    with connect(url, token) as client, handled():
        try:
            state = _call(client, "POST", "/server/shutdown", {"mode": mode.value})
        except ApiError as exc:
            if exc.status in (404, 405):
                raise fail(f"the server at {client.url} cannot be stopped over its API (an "
                           "older gpupool): stop `gpupool up` with Ctrl-C or SIGTERM") from None
            raise
        err.print(f"gpupool at {client.url}: {state.message}", markup=False, soft_wrap=True)
        if wait:
            _wait_until_stopped(client, state)
            typer.echo("gpupool server stopped")


def _call(client: Client, method: str, path: str, body: Any = None) -> ServerState:
    # /server is not in the SDK's Client yet: one request through its transport and errors.
    call = Call(method, f"{API}{path}", ServerState.model_validate, body=body)
    return client._do(call)


def _wait_until_stopped(client: Client, state: ServerState) -> None:
    """Poll the server until it no longer answers (saying when the number of running jobs
    changes), then wait for its process to exit when it runs here."""
    shown = state.running
    try:
        while True:
            time.sleep(POLL_S)
            try:
                state = _call(client, "GET", "/server")
            except ApiError as exc:
                if exc.unreachable:
                    break
                raise
            if state.running != shown and state.stopping is not StopMode.LEAVE:
                shown = state.running
                err.print(f"waiting: {_running(state.running)}", markup=False)
        _wait_for_local_process(client.url)
    except KeyboardInterrupt:
        err.print("stopped waiting; the server goes on stopping (`gpupool down` stops it at "
                  "once, leaving running jobs to the next `gpupool up`)", markup=False,
                  soft_wrap=True)
        raise typer.Exit(code=EXIT_INTERRUPTED) from None


def _running(n: int) -> str:
    if not n:
        return "no job left running; stopping"
    return f"{n} job{'s' if n != 1 else ''} still running"


def _wait_for_local_process(url: str) -> None:
    """When ``server.json`` of the local data dir names ``url``, wait (up to EXIT_WAIT_S) for
    the process it names to exit, so that `gpupool up` may start again at once."""
    try:
        found = json.loads((data_dir() / "server.json").read_text())
        pid = int(found["pid"])
        same = str(found["url"]).rstrip("/") == url.rstrip("/")
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not same or pid == os.getpid():
        return
    deadline = time.monotonic() + EXIT_WAIT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if not _alive(pid):
        return
    err.print(f"the server no longer answers, but its process {pid} has not exited yet",
              style="yellow")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie, exited but not yet reaped
    by its parent, counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another account's process: it exists
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]
