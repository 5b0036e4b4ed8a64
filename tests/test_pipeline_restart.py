"""Pipelines across server restarts: kill -9 mid-run, then a correct finish (SQLite and
PostgreSQL); and a cron schedule that catches up the firings missed while the server was
down, on an injected clock (a clock file; no sleeping through minutes)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline_helpers import finished, gate, py_step, run_view, start, step_state, steps
from server_harness import Server, backend_params, make_server, wait_for


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    yield from make_server(request.param, tmp_path, "1xA100-80GB")


def test_kill9_mid_run_then_a_correct_finish(server: Server, tmp_path: Path) -> None:
    train_go, side_go, starts = tmp_path / "train-go", tmp_path / "side-go", tmp_path / "starts"
    count = f"open({str(starts)!r}, 'a').write(os.environ['GPUPOOL_STEP'] + '\\n')\n"
    definition = {"name": "survivor", "steps": [
        py_step("first", count + "(out / 'seed').write_text('7')", outputs=["seed"]),
        py_step("train", count + gate(train_go)
                + "(out / 'files' / 'w.txt').write_text(os.environ['SEED'] * 3)",
                kind="job", resources={"gpus": 1}, files=["w.txt"],
                inputs={"SEED": "${{ steps.first.outputs.seed }}"}),
        py_step("side", count + gate(side_go) + "(out / 'n').write_text('5')", outputs=["n"],
                depends_on=["first"]),
        py_step("final", count + "w = open(os.environ['W']).read()\n"
                "(out / 'result').write_text(w + ':' + os.environ['N'])", outputs=["result"],
                inputs={"W": "${{ steps.train.files.w.txt }}",
                        "N": "${{ steps.side.outputs.n }}"}),
    ]}
    with server.client() as c:
        run_id = start(c, definition)
        step_state(c, run_id, "train", "running")
        step_state(c, run_id, "side", "running")
    server.kill9()
    side_go.touch()  # this step ends while the server is down
    server.start()
    with server.client() as c:
        train_go.touch()
        view = finished(c, run_id)
    by = steps(view)
    assert view["state"] == "succeeded", view
    assert by["final"]["outputs"] == {"result": "777:5"}
    assert [s["attempt"] for s in view["steps"]] == [1, 1, 1, 1]
    # every step's command ran exactly once: nothing was started twice after the restart
    assert sorted(starts.read_text().split()) == ["final", "first", "side", "train"]


def at(hour: int, minute: int, second: int = 0) -> float:
    return datetime(2030, 1, 1, hour, minute, second, tzinfo=UTC).timestamp()


def test_cron_schedule_catches_up_missed_runs_after_downtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = tmp_path / "clock"
    clock.write_text(str(at(0, 0, 30)))
    monkeypatch.setenv("GPUPOOL_PIPELINE_CLOCK_FILE", str(clock))
    definition = {"name": "nightly", "params": {"label": "x"}, "steps": [
        py_step("tick", "(out / 'label').write_text('${{ params.label }}')", outputs=["label"]),
    ]}
    body = {"definition": definition, "cron": "*/5 * * * *", "catchup_limit": 3,
            "params": {"label": "cron"}}

    def runs(c):  # type: ignore[no-untyped-def]
        return sorted(c.get("/pipeline-runs").json(), key=lambda r: int(r["id"]))

    for srv in make_server("sqlite", tmp_path, ""):
        with srv.client() as c:
            response = c.put("/pipeline-schedules", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["next_fire_at"] == "2030-01-01T00:05:00Z"
            bad = c.put("/pipeline-schedules", json={**body, "cron": "61 * * * *"})
            assert bad.status_code == 422 and "cron" in bad.json()["detail"]
            clock.write_text(str(at(0, 5)))  # the first firing, while the server is up
            wait_for(lambda: len(runs(c)) == 1)
            srv.kill9()
            clock.write_text(str(at(1, 2)))  # down from 00:05 to 01:02: 11 firings missed
            srv.start()
            made = wait_for(lambda: (found := runs(c)) and len(found) == 4 and found)
            assert [r["scheduled_for"] for r in made] == [
                "2030-01-01T00:05:00Z", "2030-01-01T00:50:00Z", "2030-01-01T00:55:00Z",
                "2030-01-01T01:00:00Z"]
            assert {r["trigger"] for r in made} == {"schedule"}
            assert {r["schedule"] for r in made} == {"nightly"}
            for r in made:
                view = finished(c, r["id"])
                assert view["state"] == "succeeded"
                assert steps(view)["tick"]["outputs"] == {"label": "cron"}
            schedule = c.get("/pipeline-schedules").json()[0]
            assert schedule["skipped"] == 8  # 00:10 .. 00:45, beyond the catch-up limit
            assert schedule["next_fire_at"] == "2030-01-01T01:05:00Z"
            assert len(runs(c)) == 4  # a restart does not make them again
            assert run_view(c, made[-1]["id"])["params"] == {"label": "cron"}
