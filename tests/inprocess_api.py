"""The middle tier with the API: the real FastAPI app, a real Controller over real SQLite, a
scripted executor and an injected clock, all in this process (Starlette's TestClient over
httpx; no port, no subprocess). Tests step the loop by hand (``step``), so every decision is
deterministic. Use it for the API's and the loop's logic; keep a real server for crash,
CLI, Ray and console tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from fake_executor import ScriptedExecutor
from gpupool.core.cluster import NodeSpec
from gpupool.executors.inventory import LocalInventory, parse_fake_gpus
from gpupool.server.api.app import create_app
from gpupool.server.api.deps import AppContext
from gpupool.server.controller import Controller
from gpupool.server.db.database import Database
from gpupool.server.services.identity import bootstrap
from gpupool.server.settings import Settings
from pool_twin import Clock


class InProcessServer:
    """``admin``: an httpx-style client with the admin token; ``client(token)`` another."""

    def __init__(self, tmp_path: Path, nodes: int = 1, cards: int = 4,
                 **settings: Any) -> None:
        self.clock = Clock()
        self.settings = Settings(home=tmp_path, work_dir=tmp_path / "work", policy="bestfit",
                                 sandbox="none", **settings)
        self.db = Database(self.settings.db_url)
        self.db.migrate()
        gpus = parse_fake_gpus(f"{cards}xA100-80GB")
        specs = tuple(NodeSpec(f"n{i}", 16000, 65536, gpus) for i in range(nodes))
        inventory = LocalInventory(specs, {s.name: tuple(range(cards)) for s in specs}, "fake")
        self.executor = ScriptedExecutor(self.clock)
        self.controller = Controller(self.settings, self.db, self.executor, inventory,
                                     clock=self.clock, launch_threads=0)
        self.controller.recover()
        token = bootstrap(self.db, self.settings.token_file, nodes * cards * 1000)
        assert token is not None
        self.app = create_app(AppContext(self.settings, self.db, self.controller),
                              run_loop=False)
        self.admin = self.client(token)

    def client(self, token: str) -> TestClient:
        return TestClient(self.app, base_url="http://127.0.0.1/api/v1",
                          headers={"Authorization": f"Bearer {token}"})

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
