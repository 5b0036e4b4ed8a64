"""Accounting through a real ``gpupool up`` (fake GPUs): jobs of two teams with known
durations; ``gpupool usage --by team --json`` reports GPUs × seconds held within 2 % of what
the jobs' own start and end say; a job running across a ``kill -9`` of the server is
counted once, for the whole time it held its GPUs; users see their own team's usage only;
``--csv`` has the same columns; bad windows are refused, naming the option."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_harness import Server, wait_for

DONE = ("succeeded", "failed", "cancelled")


@pytest.fixture
def server(tmp_path: Path) -> Any:
    made = Server(tmp_path / "home", "", "4xA100-80GB")
    made.home.mkdir(parents=True)
    made.start()
    try:
        yield made
    finally:
        made.stop()


def api(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


def member(admin: httpx.Client, user: str, team: str) -> str:
    admin.post("/teams", json={"name": team, "quota_gpus": 2})
    made = admin.post("/users", json={"name": user, "team": team, "unix_user": "root"})
    assert made.status_code == 201, made.text
    return str(admin.post("/tokens", json={"user": user}).json()["token"])


def held(client: httpx.Client, job_id: str) -> float:
    """GPUs × seconds between the job's start and end, as its own record says."""
    view = client.get(f"/jobs/{job_id}").json()
    seconds = (datetime.fromisoformat(view["ended_at"])
               - datetime.fromisoformat(view["started_at"])).total_seconds()
    assert seconds >= 3.0  # it slept 3 s at least
    return float(view["spec"]["gpus"]) * seconds


def cli(server: Server, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", "usage", *args,
                           "--url", server.url, "--token", token],
                          capture_output=True, text=True, timeout=60, check=False)


def finished(client: httpx.Client, ids: list[str]) -> bool:
    return all(client.get(f"/jobs/{i}").json()["phase"] in DONE for i in ids)


def test_usage_by_team_matches_the_jobs_and_survives_a_kill_9(server: Server) -> None:
    with api(server, server.token) as admin:
        blue_token = member(admin, "ada", "blue")
        red_token = member(admin, "bob", "red")
        with api(server, blue_token) as blue, api(server, red_token) as red:
            ids = {"blue": [blue.post("/jobs", json={"command": ["sleep", "3"], "gpus": g})
                            .json()["id"] for g in (1, 0.5)],
                   "red": [red.post("/jobs", json={"command": ["sleep", "5"], "gpus": 2})
                           .json()["id"]]}
            wait_for(lambda: red.get(f"/jobs/{ids['red'][0]}").json()["phase"] == "running",
                     timeout=30)
            server.kill9()  # red's job keeps running without its server
            server.start()
            wait_for(lambda: finished(blue, ids["blue"]) and finished(red, ids["red"]),
                     timeout=60, interval=0.2)
            expected = {"blue": sum(held(blue, i) for i in ids["blue"]),
                        "red": held(red, ids["red"][0])}
            for client, team in ((blue, "blue"), (red, "red")):
                assert client.get(f"/jobs/{ids[team][0]}").json()["phase"] == "succeeded"

        done = cli(server, server.token, "--by", "team", "--json")
        assert done.returncode == 0, done.stderr
        rows = {r["key"]: r for r in json.loads(done.stdout)}
        assert set(rows) == {"blue", "red"}
        for team, want in expected.items():
            assert rows[team]["gpu_seconds"] == pytest.approx(want, rel=0.02), (team, rows)
            assert rows[team]["jobs"] == len(ids[team])  # counted once, across the crash
            assert rows[team]["gpu_seconds_used"] is None  # not measured without NVML
        assert list(rows) == sorted(rows, key=lambda k: -rows[k]["gpu_seconds"])

        # a user sees their own team only; by job, the keys are job ids
        mine = json.loads(cli(server, red_token, "--json").stdout)
        assert [r["key"] for r in mine] == ["red"]
        by_job = json.loads(cli(server, blue_token, "--by", "job", "--json").stdout)
        assert sorted(r["key"] for r in by_job) == sorted(ids["blue"])

        # CSV: the same columns as the JSON rows
        table = list(csv.DictReader(io.StringIO(cli(server, server.token, "--csv").stdout)))
        assert [r["key"] for r in table] == list(rows)
        assert float(table[0]["gpu_seconds"]) == rows[table[0]["key"]]["gpu_seconds"]
        assert set(table[0]) == {"key", "gpu_seconds", "gpu_seconds_used", "jobs"}

        # a window before the jobs holds nothing; bad windows are refused
        early = cli(server, server.token, "--since", "2020-01-01", "--until", "2020-01-02",
                    "--json")
        assert early.returncode == 0 and json.loads(early.stdout) == []
        bad = cli(server, server.token, "--since", "last tuesday")
        assert bad.returncode == 2 and "--since" in bad.stderr
        backwards = admin.get("/usage", params={"since": "2026-01-02T00:00:00",
                                                "until": "2026-01-01T00:00:00"})
        assert backwards.status_code == 422 and "until" in backwards.text

        # who may read it: no one without a token; another team's member sees only theirs
        for path in ("/usage", "/usage/series"):
            anonymous = httpx.get(f"{server.url}/api/v1{path}", trust_env=False, timeout=30)
            assert anonymous.status_code == 401, (path, anonymous.text)
        with api(server, red_token) as red:
            series = red.get("/usage/series", params={"step_s": 3600}).json()
            assert list(series["values"]) == ["red"]
