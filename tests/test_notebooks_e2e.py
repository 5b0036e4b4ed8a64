"""Real JupyterLab through a real ``gpupool up`` (fake GPUs), run as its owner's account in the
sandbox and reached only through the gateway: its REST API answers, a kernel computes
``1+1`` over the WebSocket, a file survives suspend and resume, other teams get 404, no token
401, and Jupyter's port itself refuses whoever lacks the gateway's secret. Idle reclaim: an
idle notebook is suspended, a job waiting for its GPU starts, resume brings it back."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpupool.executors import accounts
from gpupool.server.gateway.keys import notebook_secret
from notebook_client import base_of, run_code, wait_for
from server_harness import Server, kill_leftover_jobs

pytest.importorskip("jupyterlab", reason="the notebook extra is not installed")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    sandbox = "bwrap" if shutil.which("bwrap") else "none"
    made = Server(tmp_path / "home", "", "2xA100-80GB", isolated=True,
                  extra_env={"GPUPOOL_SANDBOX": sandbox})
    made.home.mkdir(parents=True)
    made.start()
    try:
        yield made
    finally:
        made.stop()
        kill_leftover_jobs(made.home)  # notebooks outlive the server, as jobs do
        shutil.rmtree(made.work_dir, ignore_errors=True)


def api(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


def new_user(admin: httpx.Client, name: str, team: str) -> str:
    if team not in [t["name"] for t in admin.get("/teams").json()]:
        assert admin.post("/teams", json={"name": team, "quota_gpus": 1}).status_code == 201
    made = admin.post("/users", json={"name": name, "team": team})
    assert made.status_code == 201, made.text
    return str(admin.post("/tokens", json={"user": name}).json()["token"])


def endpoint(server: Server, job_id: str) -> dict[str, object]:
    """Where the notebook's Jupyter listens, as the server recorded it."""
    with sqlite3.connect(server.home / "gpupool.db") as db:
        raw = db.execute("SELECT endpoint FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
    return dict(json.loads(raw[0]))


def test_jupyterlab_through_the_gateway_as_its_owner(server: Server) -> None:
    admin = api(server, server.token)
    ada = new_user(admin, "ada", "default")
    eve = new_user(admin, "eve", "red")
    with api(server, ada) as mine:
        made = mine.post("/jobs", json={"kind": "notebook", "name": "lab", "gpus": 0.5})
        assert made.status_code == 201, made.text
        nb = made.json()["id"]
        view = wait_for(mine, nb, "ready")
    assert view["isolation"].endswith(f"as {accounts.prefix()}ada")
    base = base_of(view["url"])
    assert base.endswith(f"/nb/{nb}/")
    as_ada = {"Authorization": f"Bearer {ada}"}
    with httpx.Client(timeout=60, trust_env=False) as web:
        status = web.get(base + "api/status", headers=as_ada)
        assert status.status_code == 200, status.text
        assert "last_activity" in status.json()
        saved = web.put(base + "api/contents/hello.txt", headers=as_ada,
                        json={"type": "file", "format": "text", "content": "kept\n"})
        assert saved.status_code in (200, 201), saved.text
        # another team: as if there were no such notebook; no token: 401
        assert web.get(base + "api/status",
                       headers={"Authorization": f"Bearer {eve}"}).status_code == 404
        assert web.get(base + "api/status").status_code == 401
        assert web.get(base + "api/contents/hello.txt").status_code == 401
        # the page the owner's browser gets never carries the notebook's secret
        secret = notebook_secret((server.home / "gateway.key").read_bytes(), int(nb), 1)
        page = web.get(base + "lab", headers={**as_ada, "Accept": "text/html"})
        assert page.status_code == 200 and "jupyter-config-data" in page.text
        assert secret not in page.text and secret not in str(page.headers)
        # Jupyter's own port, reached directly (as another job could): nothing without the
        # gateway's secret, not even with a valid gpupool token
        where = endpoint(server, nb)
        direct = f"http://{where['host']}:{where['port']}/nb/{nb}/api/contents/hello.txt"
        assert web.get(direct).status_code == 403
        assert web.get(direct, headers=as_ada).status_code == 403
    # another team's job cannot read the notebook's files
    with api(server, eve) as theirs:
        peek = theirs.post("/jobs", json={"command": [
            "cat", str(server.work_dir / "envs" / nb / "hello.txt")]}).json()
        assert wait_for(theirs, peek["id"], "failed")["exit_code"] != 0
    assert run_code(base, ada, "1+1") == "2"
    # the kernel runs as ada's account, in ada's own directory
    who = run_code(base, ada, "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name)")
    assert who.strip() == f"{accounts.prefix()}ada"

    with api(server, ada) as mine:
        assert mine.post(f"/jobs/{nb}/suspend").status_code == 202
        wait_for(mine, nb, "suspended")
        assert mine.get(f"/jobs/{nb}").json()["url"] is None
        with httpx.Client(timeout=60, trust_env=False) as web:
            polled = web.get(base + "api/status", headers=as_ada)
            assert polled.status_code == 503  # a program's GET does not wake it
            assert mine.get(f"/jobs/{nb}").json()["phase"] == "suspended"
            opened = web.get(base + "lab", headers={**as_ada, "Accept": "text/html"})
            assert opened.status_code == 503  # its owner opening the page resumes it
            assert "Retry-After" in opened.headers
        view = wait_for(mine, nb, "ready")
    assert view["attempts"] == 2
    with httpx.Client(timeout=60, trust_env=False) as web:
        again = web.get(base + "api/contents/hello.txt", headers=as_ada)
        assert again.status_code == 200, again.text
        assert again.json()["content"] == "kept\n"
    assert run_code(base, ada, "21*2") == "42"


def test_an_idle_notebook_is_suspended_for_a_waiting_job_and_resumes_with_its_files(
        tmp_path: Path) -> None:
    server = Server(tmp_path / "home", "", "1xA100-80GB")
    server.home.mkdir(parents=True)
    server.start()
    try:
        with api(server, server.token) as admin:
            nb = admin.post("/jobs", json={"kind": "notebook", "gpus": 1,
                                           "idle_timeout_s": 5}).json()["id"]
            base = base_of(wait_for(admin, nb, "ready")["url"])
            token = {"Authorization": f"Bearer {server.token}"}
            with httpx.Client(timeout=60, trust_env=False) as web:
                saved = web.put(base + "api/contents/notes.txt", headers=token,
                                json={"type": "file", "format": "text", "content": "mine"})
                assert saved.status_code in (200, 201), saved.text
            job = admin.post("/jobs", json={"command": ["true"], "gpus": 1}).json()
            assert admin.get(f"/jobs/{job['id']}").json()["phase"] == "pending"
            suspended = wait_for(admin, nb, "suspended", timeout=90)
            assert any("idle for" in e["message"] for e in suspended["events"])
            ran = wait_for(admin, job["id"], "succeeded", timeout=90)
            assert ran["placement"]["gpus"] == [0]
            assert admin.post(f"/jobs/{nb}/resume").status_code == 202
            wait_for(admin, nb, "ready")
            with httpx.Client(timeout=60, trust_env=False) as web:
                back = web.get(base + "api/contents/notes.txt", headers=token)
                assert back.status_code == 200 and back.json()["content"] == "mine"
    finally:
        server.stop()
        kill_leftover_jobs(server.home)
        shutil.rmtree(server.work_dir, ignore_errors=True)


def test_the_cli_creates_opens_shells_into_and_deletes_a_notebook(tmp_path: Path) -> None:
    server = Server(tmp_path / "home", "", "1xA100-80GB")
    server.home.mkdir(parents=True)
    server.start()

    def gpupool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args],
                              env=server.env, input=stdin, capture_output=True, text=True,
                              timeout=180)

    try:
        made = gpupool("notebook", "create", "--name", "cli-lab", "--gpus", "0.25",
                       "--idle-timeout", "30m")
        assert made.returncode == 0, made.stderr
        url = made.stdout.strip().splitlines()[-1]
        assert url.endswith("/lab") and "/nb/" in url
        listed = gpupool("notebook", "ls", "--json")
        assert json.loads(listed.stdout)[0]["url"] == url
        ps = gpupool("ps")
        assert "notebook" in ps.stdout and "cli-lab" in ps.stdout
        shell = gpupool("shell", "cli-lab", stdin="echo hi-from-$(whoami)\nexit\n")
        assert shell.returncode == 0, shell.stderr
        assert "hi-from-root" in shell.stdout  # the harness runs the admin's work as root
        assert gpupool("notebook", "suspend", "cli-lab").returncode == 0
        with api(server, server.token) as admin:
            nb = admin.get("/jobs", params={"name": "cli-lab"}).json()[0]["id"]
            wait_for(admin, nb, "suspended")
            assert gpupool("notebook", "resume", "cli-lab").returncode == 0
            wait_for(admin, nb, "ready")
            assert gpupool("notebook", "delete", "cli-lab", "--yes").returncode == 0
            wait_for(admin, nb, "cancelled")
    finally:
        server.stop()
        kill_leftover_jobs(server.home)
        shutil.rmtree(server.work_dir, ignore_errors=True)
