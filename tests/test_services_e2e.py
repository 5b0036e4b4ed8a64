"""Inference services through a real ``gpupool up`` (fake GPUs), each replica a real HTTP
server (tests/service_app.py) run as its owner's account in the sandbox, reached only
through the gateway: requests succeed; load scales the replicas out and, after the
cooldown, back in; a rolling update and a killed replica under load fail no request;
another team's token is refused, a key works until revoked, a public service needs no
credential; the replica's own port cannot be reached around the gateway."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server_harness import Server, job_reachable_dir, kill_leftover_jobs, wait_for

APP = Path(__file__).with_name("service_app.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sandbox = "bwrap" if shutil.which("bwrap") else "none"
    made = Server(tmp_path_factory.mktemp("svc") / "home", "", "2xA100-80GB", isolated=True,
                  extra_env={"GPUPOOL_SANDBOX": sandbox})
    made.home.mkdir(parents=True)
    made.start()
    try:
        yield made
    finally:
        made.stop()
        kill_leftover_jobs(made.home)  # replicas outlive the server, as jobs do
        shutil.rmtree(made.work_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def code_dir() -> Path:
    where = job_reachable_dir("gpupool-svc-app-")
    shutil.copy(APP, where / "serve.py")
    os.chmod(where / "serve.py", 0o644)
    return where


def api(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


def new_user(admin: httpx.Client, name: str, team: str) -> str:
    if team not in [t["name"] for t in admin.get("/teams").json()]:
        assert admin.post("/teams", json={"name": team, "quota_gpus": 2}).status_code == 201
    made = admin.post("/users", json={"name": name, "team": team})
    assert made.status_code == 201, made.text
    return str(admin.post("/tokens", json={"user": name}).json()["token"])


@pytest.fixture(scope="module")
def tokens(server: Server) -> dict[str, str]:
    with api(server, server.token) as admin:
        return {"admin": server.token, "ada": new_user(admin, "ada", "blue"),
                "bob": new_user(admin, "bob", "red")}


def deploy(client: httpx.Client, code_dir: Path, **over: object) -> dict[str, object]:
    spec = {"name": "echo", "command": ["python3", "serve.py"], "workdir": str(code_dir),
            "gpus": 0.25, "replicas": {"min": 1, "max": 3},
            "scaling": {"target_inflight": 2, "cooldown_s": 3},
            "readiness": {"path": "/healthz"}, "grace_period_s": 5, **over}
    done = client.post("/services", json=spec)
    assert done.status_code in (200, 201), done.text
    return dict(done.json())


def service(client: httpx.Client, name: str = "echo") -> dict[str, object]:
    got = client.get(f"/services/{name}")
    assert got.status_code == 200, got.text
    return dict(got.json())


def ready(client: httpx.Client, n: int, name: str = "echo", timeout: float = 90) -> dict:  # type: ignore[type-arg]
    return dict(wait_for(lambda: (lambda s: s if s["ready_replicas"] >= n else None)(
        service(client, name)), timeout=timeout, interval=0.3))


def host_pid(port: int) -> int:
    """The host's pid of the replica server on ``port`` (inside, it has a pid of its
    sandbox's own)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"serve.py" not in argv or any(b"replica_front" in a for a in argv):
                continue  # not the server (its front names it too)
            if f"PORT={port}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no replica server on port {port}")


class Load:
    """``n`` threads calling ``path`` through the gateway (kept-alive connections) until
    stopped; every answer's status (or the exception's name) and the replicas (by port)
    that served."""

    def __init__(self, url: str, token: str | None, n: int, path: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url, self.headers, self.path = url, headers, path
        self.statuses: Counter[str] = Counter()
        self.ports: Counter[int] = Counter()
        self.models: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=60, headers=self.headers) as client:
            while not self._stop.is_set():
                try:
                    answer = client.get(self.url + self.path)
                    key = str(answer.status_code)
                    body = answer.json() if answer.status_code == 200 else {}
                except (httpx.HTTPError, ValueError) as exc:
                    key, body = type(exc).__name__, {}
                with self._lock:
                    self.statuses[key] += 1
                    if "port" in body:
                        self.ports[int(body["port"])] += 1
                        self.models[str(body["model"])] += 1

    def count(self) -> int:
        with self._lock:
            return sum(self.statuses.values())


def test_a_service_serves_scales_rolls_and_survives_a_killed_replica(
        server: Server, tokens: dict[str, str], code_dir: Path) -> None:
    with api(server, tokens["ada"]) as ada:
        made = deploy(ada, code_dir)
        assert made["action"] == "created"
        svc = ready(ada, 1)
        url = str(svc["url"])
        assert url.endswith("/svc/echo/")
        auth = {"Authorization": f"Bearer {tokens['ada']}"}

        # requests through the gateway: the app sees its own paths, and the prefix
        answer = httpx.get(url + "work?ms=1", headers=auth, trust_env=False, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["path"] == "/work?ms=1"
        assert answer.json()["prefix"] == "/svc/echo"
        predicted = httpx.post(url + "predict", json=[1.0, 2.0], headers=auth,
                               trust_env=False, timeout=30)
        assert predicted.status_code == 200 and predicted.json()["y"] == [-1.5, 2.5]
        with httpx.stream("GET", url + "stream", headers=auth, trust_env=False,
                          timeout=30) as streamed:
            assert [c for c in streamed.iter_text() if c] == ["data: 0\n\n", "data: 1\n\n",
                                                             "data: 2\n\n"]

        # the replica's own port is in its sandbox's network: nothing gets around the gateway
        replica = svc["replicas"][0]  # type: ignore[index]
        with sqlite3.connect(server.home / "gpupool.db") as db:
            raw = db.execute("SELECT endpoint FROM jobs WHERE id = ?",
                             (int(replica["id"]),)).fetchone()
        endpoint = json.loads(raw[0])
        if shutil.which("bwrap"):
            with pytest.raises(OSError):
                socket.create_connection((endpoint["host"], endpoint["port"]), timeout=2)

        # load: 8 clients of 300 ms requests at 2 in flight per replica → more replicas
        with Load(url, tokens["ada"], 8, "work?ms=300") as load:
            wait_for(lambda: service(ada)["ready_replicas"] >= 2, timeout=90, interval=0.3)
            # the gateway learns of the new replica within its cache's second: then the load
            # is served by more than one
            wait_for(lambda: len(load.ports) >= 2, timeout=30)
        assert set(load.statuses) == {"200"}, load.statuses
        # ... and back to one after the load and the cooldown
        wait_for(lambda: service(ada)["desired_replicas"] == 1
                 and len(service(ada)["replicas"]) == 1, timeout=60, interval=0.3)

        # a rolling update under load fails nothing, and ends on the new spec only
        deploy(ada, code_dir, replicas={"min": 2, "max": 2}, env={"MODEL": "v2"})
        with Load(url, tokens["ada"], 4, "work?ms=20") as load:
            wait_for(lambda: (lambda s: s["generation"] == 2 and s["ready_replicas"] == 2
                              and all(r["generation"] == 2 for r in s["replicas"]))(
                                  service(ada)), timeout=90, interval=0.3)
            seen = load.count()
            wait_for(lambda: load.count() > seen + 20, timeout=30)
        assert set(load.statuses) == {"200"}, load.statuses
        assert load.models["v2"] > 0

        # killing a replica's server under a GET load fails no request; it is replaced
        with Load(url, tokens["ada"], 4, "work?ms=20") as load:
            wait_for(lambda: len(load.ports) >= 2, timeout=30)
            os.kill(host_pid(next(iter(load.ports))), signal.SIGKILL)
            seen = load.count()
            wait_for(lambda: load.count() > seen + 50, timeout=30)
            wait_for(lambda: service(ada)["ready_replicas"] == 2, timeout=90, interval=0.3)
        assert set(load.statuses) == {"200"}, load.statuses

        # who may call it: another team's token no, the admin's yes, a key until revoked
        bob = httpx.get(url + "work", headers={"Authorization": f"Bearer {tokens['bob']}"},
                        trust_env=False, timeout=30)
        assert bob.status_code in (401, 403)
        assert httpx.get(url + "work", trust_env=False, timeout=30).status_code == 401
        admin = httpx.get(url + "work",
                          headers={"Authorization": f"Bearer {tokens['admin']}"},
                          trust_env=False, timeout=30)
        assert admin.status_code == 200
        key = ada.post("/services/echo/keys", json={"name": "web"}).json()["key"]
        keyed = {"Authorization": f"Bearer {key}"}
        assert httpx.get(url + "work", headers=keyed, trust_env=False,
                         timeout=30).status_code == 200
        assert ada.delete("/services/echo/keys/web").status_code == 200
        wait_for(lambda: httpx.get(url + "work", headers=keyed, trust_env=False,
                                   timeout=30).status_code == 401, timeout=5)

        assert ada.delete("/services/echo").status_code == 200
        wait_for(lambda: httpx.get(url + "work", headers=auth, trust_env=False,
                                   timeout=30).status_code == 404, timeout=5)


def test_a_public_service_needs_no_credential(
        server: Server, tokens: dict[str, str], code_dir: Path) -> None:
    with api(server, tokens["ada"]) as ada:
        deploy(ada, code_dir, name="pub", auth="public", gpus=0,
               replicas={"min": 1, "max": 1})
        svc = ready(ada, 1, "pub")
        answer = httpx.get(str(svc["url"]) + "work", trust_env=False, timeout=30)
        assert answer.status_code == 200 and answer.json()["model"] == "v1"
        assert ada.delete("/services/pub").status_code == 200
