"""Hostile input against the server on both stores: text that cannot be stored (lone
surrogates, NUL) and numbers that are not numbers (NaN, Infinity, booleans) are refused with
422 naming the field, nothing is written, and the listings keep answering; a row holding such
text (written by an older version) does not break them either.

Tier: in-process, over HTTP (``inproc_http.served``: the real app, controller and database of
``inprocess_api.InProcessServer``, served by uvicorn from a thread, so that the hostile
requests are parsed as a real server parses them; SQLite and a PostgreSQL schema). A
traceback logged while serving (``Served.tracebacks``) fails a case, as one in a real
server's log did; `gpupool ps` runs in this process against it (``Served.cli``). The CLI's
own refusal of a job file runs the CLI as its own process, with no server."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from db_backends import database
from inproc_http import Served, served
from inprocess_api import InProcessServer
from server_harness import PG_DSN, backend_params

SURROGATE = "\ud800"
NUL = "\0"
OK_STEP = {"name": "a", "kind": "shell", "command": ["true"]}


def definition(**extra: Any) -> dict[str, Any]:
    return {"name": "hx", "steps": [{**OK_STEP, **extra}]}


# (method, path, JSON body or None, query or None, admin?, the field the answer must name)
CASES: list[tuple[str, str, Any, dict[str, str] | None, bool, str]] = [
    ("POST", "/jobs", {"command": ["true"], "env": {"X": SURROGATE}}, None, False, "env.X"),
    ("POST", "/jobs", {"command": ["true"], "env": {SURROGATE: "1"}}, None, False, "env"),
    ("POST", "/jobs", {"command": ["echo", SURROGATE]}, None, False, "command.1"),
    ("POST", "/jobs", {"command": ["true"], "name": "a" + SURROGATE}, None, False, "name"),
    ("POST", "/jobs", {"command": ["true"], "workdir": "/tmp" + NUL}, None, False, "workdir"),
    ("POST", "/jobs", {"command": ["true"], "queue": "q" + NUL}, None, False, "queue"),
    ("POST", "/jobs", {"command": ["true"], "memory": float("inf")}, None, False, "memory"),
    ("POST", "/jobs", {"command": ["true"], "cpu": float("nan")}, None, False, "cpu"),
    ("POST", "/pipeline-runs", {"definition": definition(), "params": {"p": SURROGATE}}, None,
     False, "params.p"),
    ("POST", "/pipeline-runs", {"definition": definition(), "params": {"p": float("nan")}},
     None, False, "params.p"),
    ("POST", "/pipeline-runs", {"definition": definition(env={"E": "x" + NUL})}, None, False,
     "definition.steps.0.env.E"),
    ("PUT", "/pipeline-schedules", {"definition": definition(), "cron": "* * * * *",
                                    "params": {"p": SURROGATE}}, None, False, "params.p"),
    ("PUT", "/secrets/HX_SECRET", {"value": "s" + SURROGATE}, None, False, "value"),
    ("POST", "/teams", {"name": "t" + SURROGATE}, None, True, "name"),
    ("POST", "/teams", {"name": "hxbool", "quota_gpus": True}, None, True, "quota_gpus"),
    ("POST", "/teams", {"name": "hxnan", "borrow_limit_gpus": float("nan")}, None, True,
     "borrow_limit_gpus"),
    ("PATCH", "/teams/hxteam", {"quota_gpus": True}, None, True, "quota_gpus"),
    ("PATCH", "/teams/hx%00team", {"quota_gpus": 1}, None, True, "path.name"),
    ("POST", "/users", {"name": "u" + NUL, "team": "hxteam"}, None, True, "name"),
    ("POST", "/sim/runs", {"seeds": [True]}, None, True, "seeds.0"),
    ("GET", "/jobs", None, {"name": "a" + NUL}, False, "query.name"),
    ("GET", "/jobs", None, {"name": "a" + NUL}, True, "query.name"),
    ("GET", "/pipeline-runs", None, {"name": NUL}, True, "query.name"),
]


@pytest.fixture(scope="module", params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(request.param)
    for db in database(request.param, tmp):
        with served(InProcessServer(tmp, nodes=1, cards=1, db=db)) as s:
            yield s


@pytest.fixture(scope="module")
def member(server: Served) -> str:
    """A token of a user of team ``hxteam`` (runs as ``nobody``: no account is created)."""
    with server.client() as admin:
        assert admin.post("/teams", json={"name": "hxteam", "quota_gpus": 1}).status_code == 201
        made = admin.post("/users", json={"name": "hxuser", "team": "hxteam",
                                          "unix_user": "nobody"})
        assert made.status_code == 201, made.text
        return str(admin.post("/tokens", json={"user": "hxuser"}).json()["token"])


def send(client: httpx.Client, method: str, path: str, body: Any,
         query: dict[str, str] | None) -> httpx.Response:
    """As a hostile client would: JSON with \\ud800 escapes, NaN and Infinity tokens."""
    content = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"content-type": "application/json"}
    return client.request(method, path, content=content, headers=headers, params=query)


def counts(client: httpx.Client) -> tuple[int, int, int]:
    """(jobs, pipeline runs, teams) the caller sees; each listing must answer 200."""
    sizes = []
    for path in ("/jobs", "/pipeline-runs", "/teams"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        sizes.append(len(response.json()))
    return sizes[0], sizes[1], sizes[2]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]} {c[5]}" for c in CASES])
def test_hostile_input_is_refused_naming_the_field_and_nothing_is_written(
    server: Served, member: str, case: tuple[str, str, Any, dict[str, str] | None, bool, str]
) -> None:
    method, path, body, query, as_admin, field = case
    with server.client() as admin, server.client(member) as team:
        before = counts(admin), counts(team)
        response = send(admin if as_admin else team, method, path, body, query)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"{field}: "), detail
        assert counts(admin) == before[0] and counts(team) == before[1]
        assert admin.get("/secrets").status_code == 200
    assert server.tracebacks == []


def _store_old_row(server: Served, job_id: int, run_id: int) -> None:
    """What an older version wrote: a lone surrogate in a job's env and a run's params (as a
    JSON \\ud800 escape, which SQLite text and PostgreSQL json both keep)."""
    url = server.db.url
    if url.startswith("postgresql"):
        import psycopg

        schema = url.split("search_path%3D")[1]
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema}")
            row = conn.execute("SELECT spec::text FROM jobs WHERE id = %s", (job_id,)).fetchone()
            assert row is not None
            spec = json.loads(row[0])
            spec["env"]["OLD"] = SURROGATE
            conn.execute("UPDATE jobs SET spec = %s::json WHERE id = %s",
                         (json.dumps(spec), job_id))
            conn.execute("UPDATE pipeline_runs SET params = %s::json WHERE id = %s",
                         (json.dumps({"p": SURROGATE}), run_id))
        return
    with sqlite3.connect(str(make_url(url).database)) as db:
        spec = json.loads(db.execute("SELECT spec FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
        spec["env"]["OLD"] = SURROGATE
        db.execute("UPDATE jobs SET spec = ? WHERE id = ?", (json.dumps(spec), job_id))
        db.execute("UPDATE pipeline_runs SET params = ? WHERE id = ?",
                   (json.dumps({"p": SURROGATE}), run_id))


def test_rows_written_by_older_versions_still_list(server: Served, member: str) -> None:
    tag = uuid.uuid4().hex[:6]
    with server.client(member) as team, server.client() as admin:
        job = team.post("/jobs", json={"command": ["true"], "name": f"old{tag}"})
        assert job.status_code == 201, job.text
        run = team.post("/pipeline-runs", json={"definition": definition(), "params": {}})
        assert run.status_code == 201, run.text
        _store_old_row(server, int(job.json()["id"]), int(run.json()["id"]))
        for client in (team, admin):
            jobs = client.get("/jobs")
            assert jobs.status_code == 200, jobs.text
            mine = next(j for j in jobs.json() if j["id"] == job.json()["id"])
            assert mine["spec"]["env"]["OLD"] == "\ufffd"
            runs = client.get("/pipeline-runs")
            assert runs.status_code == 200, runs.text
            old = next(r for r in runs.json() if r["id"] == run.json()["id"])
            assert old["params"]["p"] == "\ufffd"
            assert client.get(f"/jobs/{job.json()['id']}").status_code == 200
    ps = server.cli("ps", "--all")
    assert ps.returncode == 0, ps.stderr


def test_cli_refuses_a_job_file_with_infinity(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("command: [echo, hi]\nmemory: .inf\ncpu: .nan\n")
    result = subprocess.run([sys.executable, "-m", "gpupool.cli.main", "submit", str(spec)],
                            env={"GPUPOOL_URL": "http://127.0.0.1:9", "PATH": "/usr/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{spec}: memory:" in lines[0] and "finite" in lines[0], lines[0]
