"""The middle tier with the API: the real FastAPI app, a real Controller over a real database
(SQLite, or a PostgreSQL schema given as ``db``), a scripted executor and an injected clock,
all in this process (Starlette's TestClient over httpx; no port, no subprocess). Tests step
the loop by hand (``step``), so every decision is deterministic. Use it for the API's and
the loop's logic; keep a real server for crash, CLI, Ray and console tests. The setup is
middle_tier.build_controller's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from fake_executor import ScriptedExecutor
from gpupool.sdk import Client
from gpupool.server.api.app import create_app
from gpupool.server.api.deps import AppContext, ServicesAccess
from gpupool.server.db.database import Database
from gpupool.server.notebook_setup import attach_notebooks, gateway_access
from gpupool.server.service_board import ServiceBoard
from gpupool.server.service_replicas import ServiceRow
from gpupool.server.service_watch import ServiceWatch
from gpupool.server.services import audit
from gpupool.server.services.identity import bootstrap
from middle_tier import Clock, build_controller

BASE_URL = "http://127.0.0.1"
GATEWAY_URL = "http://127.0.0.1:8471"
"""The gateway's address this server's answers name (no gateway listens in this tier)."""


class ScriptedReplicas(ServiceWatch):
    """The service controller with replicas' readiness scripted: a replica is ready once its
    job id is in ``ready`` (real probes over real sockets: the end-to-end test). Passes run
    when the test calls ``check``; never started as a thread."""

    ready: set[int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready = set()
        self.probed: list[str] = []

    def _probe(self, uds: str, service: ServiceRow) -> bool:
        self.probed.append(uds)
        return any(uds.split("/")[-2].startswith(f"{j}.") for j in self.ready)


class InProcessServer:
    """``admin``: an httpx-style client with the admin token (``token``); ``client(token)``
    another; ``sdk(token)`` the SDK's Client on the same app."""

    def __init__(self, tmp_path: Path, nodes: int = 1, cards: int = 4, *,
                 db: Database | None = None, raise_server_exceptions: bool = True,
                 executor: Callable[[Clock], Any] = ScriptedExecutor,
                 cpu_milli: int = 16000, memory_mib: int = 65536,
                 **settings: Any) -> None:
        """``db``: a migrated database to serve (e.g. a PostgreSQL schema of
        ``db_backends.database``); default a new SQLite file under ``tmp_path``.
        ``raise_server_exceptions=False``: an unhandled error is the client's 500, as a real
        server answers, instead of raised in the test. ``executor``: makes the executor from
        the clock (default :class:`ScriptedExecutor`; a subclass may script how processes
        answer signals). ``cpu_milli``, ``memory_mib``: each node's CPU and memory."""
        # The audit log coalesces repeated refusals in a table of the process (one server
        # per process in production): a new server here starts without the last one's.
        audit._recent.clear()
        self.clock = Clock()
        self.raise_server_exceptions = raise_server_exceptions
        self.executor = executor(self.clock)
        self.settings, self.db, self.controller = build_controller(
            tmp_path, nodes, cards, self.executor, self.clock, db=db, cpu_milli=cpu_milli,
            memory_mib=memory_mib, sandbox="none", **settings)
        self.controller.recover()
        token = bootstrap(self.db, self.settings.token_file, nodes * cards * 1000)
        assert token is not None
        self.token = token
        self.gateway_key = attach_notebooks(self.controller, self.settings)
        self.board = ServiceBoard(self.clock)
        self.services = ScriptedReplicas(self.db, self.board,
                                         lambda: list(self.controller.models),
                                         self.controller.wake, wall=self.clock)
        self.app = create_app(AppContext(
            self.settings, self.db, self.controller,
            gateway=gateway_access(self.gateway_key, lambda: GATEWAY_URL),
            services=ServicesAccess(self.board, self.services.poke, lambda: GATEWAY_URL)),
            run_loop=False)
        self.admin = self.client(token)

    def client(self, token: str) -> TestClient:
        return TestClient(self.app, base_url=f"{BASE_URL}/api/v1",
                          headers={"Authorization": f"Bearer {token}"},
                          raise_server_exceptions=self.raise_server_exceptions)

    def sdk(self, token: str | None = None) -> Client:
        """The SDK's blocking Client as ``token`` (default the admin), talking to this app
        (through the TestClient's transport: no port)."""
        transport = self.client(token or self.token)._transport
        return Client(BASE_URL, token or self.token, transport=transport)

    def user(self, name: str, team: str) -> TestClient:
        """A client of a new user ``name`` of ``team`` (made by the admin)."""
        made = self.admin.post("/users", json={"name": name, "team": team,
                                               "unix_user": "root"})
        assert made.status_code == 201, made.text
        token = self.admin.post("/tokens", json={"user": name})
        assert token.status_code == 201, token.text
        return self.client(token.json()["token"])

    def step(self, seconds: float = 0.0) -> None:
        """Move the clock on, then run one step of the loop."""
        self.clock.now += seconds
        self.controller.step()

    def output(self, job_id: int | str, text: str) -> None:
        """The job's processes write ``text`` to its log (where a real process's stdout and
        stderr land)."""
        path = Path(self.controller.launcher.log_path(int(job_id)))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(text)


def submit(client: TestClient, **spec: object) -> int:
    """Submit a ``sleep 100`` job with ``spec``'s fields as ``client``; its id."""
    done = client.post("/jobs", json={"command": ["sleep", "100"], **spec})
    assert done.status_code == 201, done.text
    return int(done.json()["id"])
