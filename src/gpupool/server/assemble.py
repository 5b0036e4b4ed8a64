"""Building the server ``gpupool up`` runs, part by part, and serving it.

Order: :func:`prepare` (before the data dir is locked), then :func:`build` (work dir and
sandbox, the nodes and their executor, the database, GPU-share enforcement, the loop with
its jobs recovered, the first admin token, ``server.json``), then :func:`serve` until a
signal or a stop request. The caller (``cli/up_cmd.py``) holds the data dir's lock from
before ``build`` until after ``serve``, prints what the parts say, and closes them.

Contract: a part that cannot be built raises :class:`BuildError`, whose message says what
was wrong and what to do, to be shown as it is; nothing else is printed here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpupool.executors.base import Executor
from gpupool.executors.inventory import LocalInventory
from gpupool.server.controller import Controller
from gpupool.server.db.database import Database
from gpupool.server.isolation import Isolation
from gpupool.server.settings import Settings
from gpupool.server.sharing.setup import Sharing

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gpupool.server.gateway.serve import GatewayServer
    from gpupool.server.gpu_watch import GpuWatch
    from gpupool.server.notebook_watch import NotebookWatch
    from gpupool.server.service_watch import ServiceWatch

Membership = Callable[[], LocalInventory | None]


class BuildError(Exception):
    """A part of the server could not be built (the message says which, and why)."""


@dataclass
class Parts:
    """The built server: its settings, database, nodes and their executor, how GPU shares
    are enforced, how jobs are isolated, and the scheduling loop (recovered, not started).
    ``token``: the first admin token when this build created it (shown once), else None."""

    settings: Settings
    db: Database
    executor: Executor
    inventory: LocalInventory
    sharing: Sharing
    isolation: Isolation
    controller: Controller
    token: str | None
    gateway_key: bytes = b""
    """The gateway's key: signs browser sign-ins and derives notebooks' Jupyter secrets."""

    @property
    def gpus(self) -> int:
        return sum(len(n.gpus) for n in self.inventory.nodes)

    def close(self) -> None:
        """Stop what the loop started outside the process (MPS daemons); idempotent (the
        app's shutdown does it too)."""
        self.controller.launcher.close()


@dataclass(frozen=True)
class Stopped:
    """How serving ended: ``started`` (the server listened), ``signal`` (the stop signal
    received, else None: a stop request, or it never started) and ``requested_by`` (who
    asked for the stop, for a stop request)."""

    started: bool
    signal: int | None
    requested_by: str


def prepare(settings: Settings) -> None:
    """Refuse a wrong GPU-sharing mode before anything is created, then make the data dir
    private (0700, and umask 077 for every file the server writes)."""
    from gpupool.server.isolation import private_data_dir
    from gpupool.server.sharing import SharingModeError, check_mode

    try:
        check_mode(settings.sharing)
    except SharingModeError as exc:
        raise BuildError(str(exc)) from None
    private_data_dir(settings.home)


def build(settings: Settings) -> Parts:
    """Every part of the server (see the module), the loop's jobs recovered from the
    database; call with the data dir locked."""
    from gpupool.executors.sandbox import SandboxModeError
    from gpupool.interposer.build import available
    from gpupool.plugins.profiles import UnknownPolicyError
    from gpupool.server.isolation import set_up
    from gpupool.server.services.identity import bootstrap
    from gpupool.server.sharing import SharingModeError, detect

    # GPU shares are enforced by MIG, MPS or the interposer (built here, cached under the
    # data dir, published in the work dir), as the node offers and GPUPOOL_SHARING allows.
    if settings.ray:  # every Ray node builds its own interposer (executors/ray_agent.py)
        enforced, where = False, "Ray nodes enforce shares with their own interposer"
    elif settings.sharing.strip().lower() in ("none", "mig"):
        enforced, where = False, f"GPUPOOL_SHARING={settings.sharing.strip().lower()}"
    else:
        enforced, where = available(settings.home / "lib")
    try:
        iso = set_up(settings, where if enforced else None)
    except SandboxModeError as exc:
        raise BuildError(str(exc)) from None
    except OSError as exc:
        raise BuildError(f"cannot prepare the work dir {settings.jobs_root}: {exc}") from None
    if enforced:
        where = iso.interposer or where
    executor, inventory, membership = nodes(settings, iso)
    db = Database(settings.db_url)
    try:
        db.migrate()
    except Exception as exc:  # a wrong URL or an unreachable server: say which
        raise BuildError(f"cannot open the database {settings.db_url}: {exc}") from None
    try:
        sharing = detect(settings.sharing, inventory, iso.workspace.root, (enforced, where),
                         settings.mps_control, "Ray" if settings.ray else "")
    except SharingModeError as exc:
        raise BuildError(str(exc)) from None
    try:
        controller = Controller(settings, db, executor, inventory,
                                interposer=where if enforced else None,
                                interposer_missing="" if enforced else where,
                                membership=membership, sharing=sharing)
    except UnknownPolicyError as exc:
        raise BuildError(str(exc)) from None
    from gpupool.server.notebook_setup import attach_notebooks

    try:
        key = attach_notebooks(controller, settings)
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot load the gateway's key: {exc}") from None
    controller.recover()
    parts = Parts(settings, db, executor, inventory, sharing, iso, controller, None, key)
    parts.token = bootstrap(db, settings.token_file, parts.gpus * 1000)
    settings.server_file.write_text(json.dumps({"url": settings.url, "pid": os.getpid()}) + "\n")
    return parts


def nodes(settings: Settings, iso: Isolation) -> tuple[Executor, LocalInventory,
                                                        Membership | None]:
    """(executor, first inventory, membership refresh or None) for this server: this
    machine's GPUs, whose processes run in ``iso``'s sandbox with its job PATH, or the
    nodes of a Ray cluster (which choose their own), which come and go."""
    from gpupool.executors.containers import IMAGES_LABEL
    from gpupool.executors.inventory import InventoryError, local_inventory

    if not settings.ray:
        from gpupool.executors.local import LocalExecutor

        try:
            executor = LocalExecutor(sandbox=iso.sandbox, job_path=iso.workspace.job_path(),
                                     images=iso.images)
            labels = {IMAGES_LABEL: "podman"} if iso.images.runtime.enabled else {}
            return executor, local_inventory(settings.fake_gpus, labels=labels), None
        except InventoryError as exc:
            raise BuildError(str(exc)) from None
    from gpupool.executors.ray_executor import RayPool, RayUnavailableError, connect

    if settings.ray == "local" and settings.fake_gpus:
        # The local head is a Ray node like any other: it declares its GPUs through the
        # environment its raylet (and so its agent) inherits.
        os.environ["GPUPOOL_FAKE_GPUS"] = settings.fake_gpus
    try:
        connect(settings.ray)
    except RayUnavailableError as exc:
        raise BuildError(str(exc)) from None
    pool = RayPool(settings.runs_dir)
    return pool, pool.inventory(), pool.refresh


def serve(parts: Parts, on_signal: Callable[[int], None]) -> Stopped:
    """Serve the API (and run the loop) until SIGINT, SIGTERM or a stop request
    (``gpupool down``, server/stopping.py), stopping gracefully (server/serving.py);
    ``on_signal(sig)`` is called at the first stop signal, from its handler. The gateway
    (notebooks) and the notebook watch run beside it and stop after it. BuildError when
    the gateway cannot listen."""
    from gpupool.server.api.app import create_app
    from gpupool.server.api.deps import AppContext, ServicesAccess
    from gpupool.server.gc_settle import Settler
    from gpupool.server.notebook_setup import gateway_access

    gateway, watch, services = start_gateway(parts)
    settings = parts.settings
    gpus = gpu_watch(parts, watch.touch)
    app = create_app(AppContext(
        settings, parts.db, parts.controller,
        gateway=gateway_access(parts.gateway_key, lambda: gateway.url),
        services=ServicesAccess(services.board, services.poke, lambda: gateway.url),
        gpu=gpus.board if gpus is not None else None))
    settler = Settler()
    try:
        watch.start()
        services.start()
        if gpus is not None:
            gpus.start()
        settler.start()
        return _serve_api(parts, app, on_signal)
    finally:
        settler.stop()
        if gpus is not None:
            gpus.stop()
        services.stop()
        watch.stop()
        gateway.stop()


def gpu_watch(parts: Parts, on_busy: Callable[[int, float], None]) -> GpuWatch | None:
    """The GPU watch (NVML samples of GPUs and jobs) of a server whose GPUs are this
    machine's real ones, not started; None otherwise (fake GPUs, none, or Ray nodes)."""
    if parts.settings.ray or parts.inventory.source != "nvml":
        return None
    from gpupool.server.gpu_watch import GpuWatch
    from gpupool.server.metrics.gpu_board import GpuBoard

    controller = parts.controller
    return GpuWatch(parts.db, controller.live, GpuBoard(),
                    parts.settings.gpu_sample_interval_s, parts.settings.gpu_idle_after_s,
                    on_busy=on_busy, share_file=controller.launcher.share_file)


def start_gateway(parts: Parts) -> tuple[GatewayServer, NotebookWatch, ServiceWatch]:
    """The gateway, listening (on ``--gateway-port``, or a free port for 0), the notebook
    watch that tells it where notebooks are and the service controller (neither started).
    BuildError when it cannot listen."""
    import socket
    from functools import partial

    from gpupool.server.gateway.app import create_gateway
    from gpupool.server.gateway.keys import notebook_secret
    from gpupool.server.gateway.serve import GatewayServer
    from gpupool.server.notebook_directory import NotebookDirectory
    from gpupool.server.notebook_watch import NotebookWatch
    from gpupool.server.service_board import ServiceBoard
    from gpupool.server.service_directory import ServiceRoutes
    from gpupool.server.service_watch import ServiceWatch

    settings, controller = parts.settings, parts.controller
    port = settings.gateway_port
    if port == 0:  # the public URL names the port before the gateway binds it
        with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as s:
            s.bind((settings.host, 0))
            port = int(s.getsockname()[1])
    public = settings.gateway_public_url(port)
    secret = partial(notebook_secret, parts.gateway_key)
    watch = NotebookWatch(parts.db, secret, lambda: public, controller.wake,
                          settings.notebook_idle_timeout_s)
    directory = NotebookDirectory(parts.db, secret, watch.touch, controller.wake)
    board = ServiceBoard()
    services = ServiceWatch(parts.db, board, lambda: list(controller.models), controller.wake)
    routes = ServiceRoutes(parts.db, board, services.poke)
    gateway = GatewayServer(create_gateway(directory, parts.gateway_key, public,
                                           services=routes),
                            ssl_certfile=settings.tls_cert or None,
                            ssl_keyfile=settings.tls_key or None)
    try:
        gateway.start(settings.host, port)
    except (OSError, RuntimeError) as exc:
        raise BuildError(str(exc)) from None
    return gateway, watch, services


def _serve_api(parts: Parts, app: FastAPI, on_signal: Callable[[int], None]) -> Stopped:
    import uvicorn

    from gpupool.server.serving import Serving
    from gpupool.server.stopping import Stopper

    settings = parts.settings
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            ssl_certfile=settings.tls_cert or None,
                            ssl_keyfile=settings.tls_key or None)
    server = Serving(config, on_signal)
    stopper = Stopper(parts.db, parts.controller, server.request_exit)
    app.state.stopper = stopper
    server.run()
    return Stopped(server.started, server.signal, stopper.requested_by)
