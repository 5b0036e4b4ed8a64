"""``gpupool up``: start the control plane on this machine."""

from __future__ import annotations

import fcntl
import functools
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from gpupool.cli.choices import POLICIES, QUEUE_ORDERS, completer

if TYPE_CHECKING:
    from rich.console import Console

    from gpupool.executors.inventory import LocalInventory
    from gpupool.server.assemble import Parts
    from gpupool.server.settings import Settings

DEFAULT_PORT = 8470
DEFAULT_GATEWAY_PORT = 8471


@functools.cache
def _err() -> Console:
    from rich.console import Console  # rich is imported when `up` runs, not for its help

    return Console(stderr=True)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _fail(message: str) -> typer.Exit:
    _err().print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def up(
    port: int = typer.Option(DEFAULT_PORT, metavar="PORT", help="Port to listen on (at --host)."),
    host: str | None = typer.Option(
        None, metavar="ADDRESS",
        help="Address to listen on (default $GPUPOOL_HOST or 127.0.0.1). Any other than a "
        "loopback address exposes the API to the network: serve HTTPS there (--tls-cert).",
    ),
    tls_cert: str | None = typer.Option(
        None, metavar="FILE",
        help="PEM certificate (chain) to serve HTTPS with; needs --tls-key "
        "(or $GPUPOOL_TLS_CERT).",
    ),
    tls_key: str | None = typer.Option(
        None, metavar="FILE",
        help="PEM private key (unencrypted) of --tls-cert (or $GPUPOOL_TLS_KEY).",
    ),
    home: Path | None = typer.Option(
        None, metavar="DIR", help="Data directory (default $GPUPOOL_HOME or ~/.gpupool)."
    ),
    fake_gpus: str | None = typer.Option(
        None, metavar="GPUS",
        help="Declare GPUs on a machine without them, e.g. 4xA100-80GB,2xT4-16GB "
        "(or $GPUPOOL_FAKE_GPUS).",
    ),
    database_url: str | None = typer.Option(
        None, metavar="URL",
        help="Database URL (default SQLite in the data dir; or $GPUPOOL_DATABASE_URL).",
    ),
    policy: str | None = typer.Option(
        None, metavar="POLICY", autocompletion=completer(POLICIES),
        help=f"Placement policy: one of {', '.join(POLICIES)} (default gpupool, or "
        "$GPUPOOL_POLICY).",
    ),
    tick: float = typer.Option(
        0.5, metavar="SECONDS", help="Seconds between scheduler passes when idle."
    ),
    ray: str | None = typer.Option(
        None, metavar="ADDRESS",
        help="Pool the nodes of a Ray cluster: its address (host:port), or 'local' to start "
        "a single-node head on 127.0.0.1 (or $GPUPOOL_RAY). Needs pip install 'gpupool[ray]'.",
    ),
    queue_order: str | None = typer.Option(
        None, metavar="ORDER", autocompletion=completer(QUEUE_ORDERS),
        help="Which team's pending job goes first: fairshare (the team whose recent GPU use "
        "is lowest for its weight; the default) or fifo (priority, then submission order).",
    ),
    backfill: bool | None = typer.Option(
        None, "--backfill/--no-backfill",
        help="Let later jobs use GPUs kept for a job with a reservation when they will end "
        "before it is due (default: on).",
    ),
    fairshare_half_life: str | None = typer.Option(
        None, metavar="DURATION",
        help="Half-life of past GPU use in fair share: seconds or with a unit (12h, 7d, 2w; "
        "default 7d).",
    ),
    default_run_limit: str | None = typer.Option(
        None, metavar="DURATION",
        help="How long a running job without a time limit is assumed to run, to estimate "
        "when a reservation starts (default 1h).",
    ),
    gateway_port: int = typer.Option(
        DEFAULT_GATEWAY_PORT, metavar="PORT",
        help="Port of the gateway (at --host) through which notebooks are reached, an origin "
        "apart from the API's; 0: any free port.",
    ),
    notebook_idle_timeout: str | None = typer.Option(
        None, metavar="DURATION",
        help="Suspend a notebook idle this long unless it asks for its own timeout "
        "(default 30m; a team's own, set with gpupool admin team set, replaces it).",
    ),
    notebook_max_idle_timeout: str | None = typer.Option(
        None, metavar="DURATION",
        help="The longest idle timeout a notebook may ask for (default 24h; a team's "
        "own replaces it).",
    ),
    notebook_max_lifetime: str | None = typer.Option(
        None, metavar="DURATION",
        help="Suspend a notebook that has run this long without a pause (default 7d; a "
        "team's own replaces it).",
    ),
    gpu_sample_interval: float | None = typer.Option(
        None, metavar="SECONDS",
        help="Seconds between NVML samples of GPU and job utilisation and memory (real "
        "GPUs only; default 10).",
    ),
    gpu_idle_after: str | None = typer.Option(
        None, metavar="DURATION",
        help="Flag a running workload idle once its GPUs have shown under 5 % utilisation "
        "this long (default 30m; shown by ps, describe, the console and /metrics).",
    ),
    metrics_public_aggregate: bool | None = typer.Option(
        None, "--metrics-public-aggregate/--no-metrics-public-aggregate",
        help="Let /metrics without a token answer an aggregate view that names no team, "
        "queue, job or user (default: off, a token is required).",
    ),
) -> None:
    """Start the gpupool server: API on 127.0.0.1 (or --host, over HTTPS with --tls-cert and
    --tls-key), SQLite state, this machine's GPUs.

    It runs until `gpupool down` or Ctrl-C. Either way running jobs keep running and the next
    `gpupool up` on the same data dir re-adopts them; pending jobs stay queued. `gpupool down
    --drain` or `--cancel-jobs` stops with no job left running."""
    # The server stack is imported here so that other commands start fast.
    from gpupool.server.settings import Settings

    half_life = _queue_options(queue_order, fairshare_half_life)
    run_limit = _duration("--default-run-limit", default_run_limit)
    idle = _duration("--notebook-idle-timeout", notebook_idle_timeout, "30m")
    max_idle = _duration("--notebook-max-idle-timeout", notebook_max_idle_timeout, "24h")
    lifetime = _duration("--notebook-max-lifetime", notebook_max_lifetime, "7d")
    gpu_idle = _duration("--gpu-idle-after", gpu_idle_after, "30m")
    try:
        settings = Settings.from_env(
            home=home,
            port=port,
            fake_gpus=fake_gpus,
            database_url=database_url,
            policy=policy,
            tick_seconds=tick,
            ray=ray,
            host=host,
            tls_cert=tls_cert,
            tls_key=tls_key,
            queue_order=queue_order,
            backfill=backfill,
            fairshare_half_life_s=half_life,
            default_run_limit_s=run_limit,
            gateway_port=gateway_port,
            notebook_idle_timeout_s=idle,
            notebook_max_idle_timeout_s=max_idle,
            notebook_max_lifetime_s=lifetime,
            gpu_sample_interval_s=gpu_sample_interval,
            gpu_idle_after_s=gpu_idle,
            metrics_public_aggregate=metrics_public_aggregate,
        )
    except ValueError as exc:
        raise _fail(escape(str(exc))) from None
    settings = _checked_access(settings)
    from gpupool.server import assemble

    try:
        assemble.prepare(settings)  # a wrong sharing mode is refused before anything is made
        lock = _lock(settings.home)
        parts = assemble.build(settings)
    except assemble.BuildError as exc:
        raise _fail(str(exc)) from None
    _hello(parts)
    try:
        _serve(parts)
    finally:
        parts.close()
        lock.close()


def _hello(parts: Parts) -> None:
    """Say where the server listens, what it pools and how to use and stop it."""
    from gpupool.cli.up_access import clear_text_warning
    from gpupool.server.sharing import startup_lines

    settings, inventory, err = parts.settings, parts.inventory, _err()
    kind = {"fake": "fake", "nvml": "NVML", "none": "no", "ray": "Ray"}[inventory.source]
    where_from = f"  {len(inventory.nodes)} Ray node(s)" if settings.ray else ""
    err.print(
        f"gpupool {settings.url}  data {settings.home}  {parts.gpus} {kind} GPUs{where_from}  "
        f"database {'SQLite' if parts.db.is_sqlite else 'PostgreSQL'}",
        highlight=False,
    )
    warning = clear_text_warning(settings.host, bool(settings.tls_cert))
    if warning:
        err.print(escape(warning), highlight=False, soft_wrap=True)
    sharing_lines = (_ray_sharing_lines(inventory) if settings.ray
                     else startup_lines(parts.sharing))
    for line in sharing_lines:
        err.print(line, highlight=False, soft_wrap=True)
    iso_lines = parts.isolation.lines
    for line in iso_lines if not settings.ray else iso_lines[:1]:
        err.print(escape(line), highlight=False, soft_wrap=True)
    if settings.gateway_port:
        err.print(f"notebooks through the gateway at {settings.gateway_public_url()}",
                  highlight=False)
    if inventory.source == "none":
        err.print("no GPU found: only CPU jobs can run (declare some with --fake-gpus)")
    if parts.token is not None:
        err.print(
            f"admin token (shown once, also saved to {settings.token_file}):\n  {parts.token}",
            highlight=False,
        )
    err.print(
        "submit a first job:  gpupool run --gpus 0.5 -- python -c 'print(1)'", highlight=False
    )
    err.print("stop the server:     gpupool down, or Ctrl-C here (running jobs keep running; "
              "see gpupool down --help)", highlight=False)


def _serve(parts: Parts) -> None:
    """Serve the API until Ctrl-C, SIGTERM or `gpupool down`, then say what happens to the
    jobs; exit 130 after Ctrl-C, 3 when the server could not start (e.g. the port is taken)."""
    from gpupool.server.assemble import serve
    from gpupool.server.serving import signal_name
    from gpupool.server.stopping import counts, farewell

    def stopping(sig: int) -> None:
        again = "; Ctrl-C again skips waiting for requests in flight" if (
            sig == signal.SIGINT) else ""
        _err().print(f"gpupool: stopping ({signal_name(sig)}{again})", highlight=False)

    from gpupool.server.assemble import BuildError

    try:
        stopped = serve(parts, stopping)
    except BuildError as exc:  # the gateway could not listen
        raise _fail(str(exc)) from None
    if not stopped.started and stopped.signal is None:
        raise typer.Exit(code=3)  # uvicorn said why (e.g. the address is in use)
    if stopped.signal is not None:
        why = signal_name(stopped.signal)
    else:
        why = f"gpupool down by {stopped.requested_by}"
    try:
        running, pending = counts(parts.db)
    except Exception:  # the database is gone: say what we can
        _err().print(f"gpupool stopped ({why}).", highlight=False)
    else:
        _err().print(escape(farewell(why, running, pending, parts.settings.home)),
                     highlight=False, soft_wrap=True)
    if stopped.signal == signal.SIGINT:
        raise typer.Exit(code=130)


def _queue_options(queue_order: str | None, half_life: str | None) -> float | None:
    """The half-life in seconds (None when not given); exit 2 naming the option when
    --queue-order is not one of QUEUE_ORDERS or --fairshare-half-life is not a positive,
    finite duration."""


    if queue_order is not None and queue_order not in QUEUE_ORDERS:
        raise _fail(escape(f"--queue-order {queue_order!r}: use one of "
                           f"{', '.join(QUEUE_ORDERS)}"))
    return _duration("--fairshare-half-life", half_life, "7d")


def _duration(option: str, text: str | None, example: str = "1h") -> float | None:
    """``text`` as seconds (None when not given); exit 2 naming ``option`` unless it is a
    positive, finite duration."""
    import math

    from gpupool.cli.admin_render import parse_seconds

    if text is None:
        return None
    try:
        seconds = parse_seconds(text)
    except ValueError as exc:
        raise _fail(escape(f"{option}: {exc}")) from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise _fail(escape(f"{option} {text!r}: give a duration more than 0, e.g. {example}"))
    return seconds


def _checked_access(settings: Settings) -> Settings:
    """``settings`` with absolute TLS file paths and a plain host; exit 2 naming the problem
    when the TLS options (or $GPUPOOL_TLS_CERT / $GPUPOOL_TLS_KEY) cannot be used."""
    import dataclasses

    from gpupool.cli.up_access import AccessError, tls_files

    try:
        cert, key = tls_files(settings.tls_cert, settings.tls_key)
    except AccessError as exc:
        raise _fail(escape(str(exc))) from None
    host = settings.host.strip().strip("[]")  # an IPv6 address with or without brackets
    return dataclasses.replace(settings, host=host, tls_cert=cert, tls_key=key)


def _ray_sharing_lines(inventory: LocalInventory) -> list[str]:
    """How GPU shares are enforced on a Ray pool: by each node's own interposer."""
    missing = {n: why for n, why in inventory.node_interposer.items() if why is not None}
    ready = len(inventory.node_interposer) - len(missing)
    lines = [f"GPU sharing on Ray nodes: each node's own interposer, ready on {ready} of "
             f"{len(inventory.node_interposer)} (MIG and MPS are not used on Ray nodes yet)"]
    lines += [f"  {node}: shares NOT enforced ({' '.join(why.split())})"
              for node, why in sorted(missing.items())]
    return lines


def _lock(home: Path):  # type: ignore[no-untyped-def]
    """Hold an exclusive lock on the data dir: two servers on one state would hand out the
    same GPUs twice."""
    handle = (home / "server.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _fail(f"another gpupool server is running on {home}") from None
    return handle
