"""Pipelines against a real `gpupool up` process on SQLite (and, for the 5-step DAG, on the
local PostgreSQL too): values and files between steps, retries, fail-fast vs continue,
re-runs reusing outputs, invalid definitions, and the priority queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import (
    EXAMPLES,
    finished,
    gate,
    py_step,
    run_view,
    start,
    step_state,
    steps,
)
from server_harness import Server, backend_params, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("pipelines"), "1xA100-80GB")


@pytest.fixture(params=backend_params())
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    yield from make_server(request.param, tmp_path, "1xA100-80GB")


def test_five_step_dag_passes_values_and_files(any_backend: Server) -> None:
    definition = yaml.safe_load((EXAMPLES / "five_steps.yaml").read_text())
    with any_backend.client() as c:
        run_id = start(c, definition, params={"rows": 50})
        view = finished(c, run_id)
        assert view["state"] == "succeeded", view
        by = steps(view)
        assert [s["state"] for s in view["steps"]] == ["succeeded"] * 5
        assert by["train"]["depends_on"] == ["split", "features"]
        assert by["evaluate"]["depends_on"] == ["train", "split"]
        # values: a string, JSON computed from a file, and a report built from both
        assert by["extract"]["outputs"] == {"row_count": "50"}
        assert by["features"]["outputs"]["stats"] == {"n": 50, "mean": 808.5}
        assert by["evaluate"]["outputs"]["report"] == {
            "model": "linear-v1", "test_rows": 10, "trained_on": 40}
        # files: stored by the server in the work dir (for the run's account), read by
        # later steps
        model = Path(by["train"]["files"]["model.json"])
        assert model.is_relative_to(any_backend.work_dir / "pipelines" / "files")
        assert yaml.safe_load(model.read_text()) == {"trained_on": 40, "epochs": 2,
                                                     "mean": 808.5}
        assert len(Path(by["split"]["files"]["test.csv"]).read_text().splitlines()) == 10
        # the train step was a real job, scheduled on a GPU share
        job = c.get(f"/jobs/{by['train']['job_id']}").json()
        assert job["phase"] == "succeeded" and job["placement"]["gpu_milli"] == 500
        assert "trained on 40 rows" in c.get(f"/pipeline-runs/{run_id}/logs",
                                             params={"step": "train"}).json()["data"]


def test_a_step_succeeds_on_its_third_try(server: Server, tmp_path: Path) -> None:
    tries = tmp_path / "tries"
    flaky = (f"p = pathlib.Path({str(tries)!r})\n"
             "n = len(p.read_text()) + 1 if p.exists() else 1\n"
             "p.write_text('x' * n)\n"
             "print('try', n, flush=True)\n"
             "(out / 'tries').write_text(str(n))\n"
             "sys.exit(0 if n >= 3 else 1)\n")
    definition = {"name": "flaky", "steps": [
        py_step("flaky", flaky, kind="job",
                outputs=["tries"], retry={"count": 2, "backoff_s": 0.1}),
        py_step("gives_up", "sys.exit(2)", retry={"count": 1, "backoff_s": 0.1},
                allow_failure=True),
        py_step("after", "print('still ran')", depends_on=["gives_up", "flaky"]),
    ]}
    with server.client() as c:
        run_id = start(c, definition)
        view = finished(c, run_id)
        by = steps(view)
        assert by["flaky"]["state"] == "succeeded", by["flaky"]["message"]
        assert by["flaky"]["attempt"] == 3
        assert by["flaky"]["outputs"] == {"tries": "3"}
        assert by["gives_up"]["state"] == "failed" and by["gives_up"]["attempt"] == 2
        assert "failed after 2 attempts: exit code 2" in by["gives_up"]["message"]
        # allow_failure: its dependents run and the run succeeds
        assert by["after"]["state"] == "succeeded" and view["state"] == "succeeded"
        log = c.get(f"/pipeline-runs/{run_id}/logs", params={"step": "flaky"}).json()["data"]
        for n in (1, 2, 3):
            assert f"==> flaky (attempt {n}) <==\ntry {n}\n" in log
        jobs = c.get("/jobs").json()
        mine = {j["name"]: j["phase"] for j in jobs if j["name"].startswith(f"pl{run_id}-")}
        assert mine == {f"pl{run_id}-flaky-1": "failed", f"pl{run_id}-flaky-2": "failed",
                        f"pl{run_id}-flaky-3": "succeeded"}


def branches(policy: str, go: Path) -> dict[str, object]:
    return {"name": f"branches-{policy}", "on_failure": policy, "steps": [
        py_step("bad", "sys.exit(3)"),
        py_step("slow", gate(go) + "(out / 'done').write_text('yes')", outputs=["done"]),
        py_step("after_bad", "pass", depends_on=["bad"]),
        py_step("after_slow", "print('${{ steps.slow.outputs.done }}')"),
    ]}


def test_fail_fast_stops_the_other_branches(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        run_id = start(c, branches("fail_fast", tmp_path / "never"))
        view = finished(c, run_id)
    by = steps(view)
    assert view["state"] == "failed"
    assert by["bad"]["state"] == "failed"
    assert by["slow"]["state"] == "cancelled"
    assert "fail_fast" in by["slow"]["message"]
    assert by["after_bad"]["state"] == "skipped" and by["after_slow"]["state"] == "skipped"


def test_continue_lets_independent_branches_finish(server: Server, tmp_path: Path) -> None:
    go = tmp_path / "go"
    with server.client() as c:
        run_id = start(c, branches("continue", go))
        step_state(c, run_id, "after_bad", "skipped")
        assert steps(run_view(c, run_id))["slow"]["state"] == "running"
        assert run_view(c, run_id)["state"] == "running"
        go.touch()
        view = finished(c, run_id)
    by = steps(view)
    assert by["slow"]["state"] == "succeeded" and by["after_slow"]["state"] == "succeeded"
    assert "upstream step bad failed" in by["after_bad"]["message"]
    assert view["state"] == "failed" and by["bad"]["state"] == "failed"


def test_rerun_from_the_failed_step_reuses_earlier_outputs(
    server: Server, tmp_path: Path
) -> None:
    made, fixed = tmp_path / "made", tmp_path / "fixed"
    definition = {"name": "rerun", "steps": [
        py_step("make", f"open({str(made)!r}, 'a').write('made\\n')\n"
                "(out / 'token').write_text('tok-42')\n"
                "(out / 'files' / 'blob.bin').write_bytes(b'\\x00blob')\n",
                outputs=["token"], files=["blob.bin"]),
        py_step("use", f"assert pathlib.Path({str(fixed)!r}).exists(), 'not fixed yet'\n"
                "blob = pathlib.Path(os.environ['BLOB']).read_bytes()\n"
                "(out / 'seen').write_text(os.environ['TOKEN'] + ':' + blob[1:].decode())\n",
                inputs={"TOKEN": "${{ steps.make.outputs.token }}",
                        "BLOB": "${{ steps.make.files.blob.bin }}"}, outputs=["seen"]),
    ]}
    with server.client() as c:
        first = start(c, definition)
        failed = finished(c, first)
        assert failed["state"] == "failed"
        assert steps(failed)["use"]["state"] == "failed"
        fixed.touch()
        response = c.post(f"/pipeline-runs/{first}/retry")
        assert response.status_code == 201, response.text
        second = response.json()["id"]
        assert response.json()["retry_of"] == first and response.json()["trigger"] == "retry"
        view = finished(c, second)
        by = steps(view)
        assert view["state"] == "succeeded"
        assert by["make"]["state"] == "reused" and by["make"]["reused_from"] == first
        assert by["make"]["files"] == steps(failed)["make"]["files"]
        assert by["use"]["outputs"] == {"seen": "tok-42:blob"}
        assert made.read_text() == "made\n"  # the first step did not run again
        again = c.post(f"/pipeline-runs/{second}/retry")
        assert again.status_code == 409 and "only a failed or cancelled" in again.text


@pytest.mark.parametrize(("definition", "field"), [
    ({"name": "p", "steps": [{"name": "a", "command": "true", "depends_on": ["b"]},
                             {"name": "b", "command": "true", "depends_on": ["a"]}]},
     "dependency cycle: a → b → a"),
    ({"name": "p", "steps": [{"name": "a", "command": "echo ${{ steps.a.outputs.x }}"}]},
     "steps.a.command"),
    ({"name": "p", "steps": [{"name": "a", "command": "true", "retrys": 2}]},
     "steps.0.retrys"),
    ({"name": "p", "steps": [{"name": "a", "command": "true",
                              "secrets": [{"name": "NOPE"}]}]},
     "steps.a.secrets: no secret named 'NOPE'"),
    ({"name": "p", "params": {"n": {"type": "int"}}, "steps": [{"name": "a", "command": "x"}]},
     "params.n: required"),
])
def test_invalid_pipelines_are_rejected_before_anything_runs(
    server: Server, definition: dict[str, object], field: str
) -> None:
    with server.client() as c:
        before = len(c.get("/pipeline-runs").json())
        response = c.post("/pipeline-runs", json={"definition": definition})
        assert response.status_code == 422, response.text
        assert field in response.json()["detail"]
        assert len(c.get("/pipeline-runs").json()) == before


def test_queued_runs_start_by_priority_which_can_change_while_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUPOOL_PIPELINE_MAX_RUNS", "1")
    go = tmp_path / "go"
    for srv in make_server("sqlite", tmp_path, ""):
        with srv.client() as c:
            blocker = start(c, {"name": "blocker", "steps": [py_step("wait", gate(go))]})
            step_state(c, blocker, "wait", "running")
            low = start(c, {"name": "low", "steps": [py_step("a", "pass")]}, priority=1)
            raised = start(c, {"name": "raised", "steps": [py_step("a", "pass")]})
            assert run_view(c, raised)["state"] == "queued"
            response = c.patch(f"/pipeline-runs/{raised}", json={"priority": 5})
            assert response.status_code == 200 and response.json()["priority"] == 5
            busy = c.patch(f"/pipeline-runs/{blocker}", json={"priority": 5})
            assert busy.status_code == 409
            go.touch()
            views = [finished(c, r) for r in (blocker, low, raised)]
            assert all(v["state"] == "succeeded" for v in views)
            assert views[2]["started_at"] < views[1]["started_at"]  # raised went first
            assert views[0]["ended_at"] <= views[2]["started_at"]  # one at a time
            listed = c.get("/pipeline-runs", params={"state": "succeeded"}).json()
            assert [v["id"] for v in listed] == [raised, low, blocker]


def test_a_step_past_its_timeout_is_stopped_and_retried_only_when_asked(
    server: Server, tmp_path: Path
) -> None:
    """A shell step and a job step that hang: both stopped at their timeout and failed with
    kind timeout; the job step's retry policy retries timeouts, the shell step's only
    failures (so it is not retried)."""
    tries = tmp_path / "tries"
    hang = (f"p = pathlib.Path({str(tries)!r})\n"
            "n = len(p.read_text()) + 1 if p.exists() else 1\n"
            "p.write_text('x' * n)\n"
            "time.sleep(n < 2 and 120 or 0)\n"  # hangs on its first try only
            "print('try', n, flush=True)\n")
    definition = {"name": "timeouts", "on_failure": "continue", "steps": [
        py_step("stuck", "time.sleep(120)", timeout_s=1,
                retry={"count": 2, "backoff_s": 0.1, "when": ["failure"]}),
        py_step("hangs_once", hang, kind="job", timeout_s=2,
                retry={"count": 1, "backoff_s": 0.1, "when": ["timeout"]}),
    ]}
    with server.client() as c:
        run_id = start(c, definition)
        view = finished(c, run_id)  # well before the 120 s sleeps could end
    by = steps(view)
    assert by["stuck"]["state"] == "failed" and by["stuck"]["attempt"] == 1
    assert "timed out after 1 s" in by["stuck"]["message"]
    assert by["hangs_once"]["state"] == "succeeded" and by["hangs_once"]["attempt"] == 2
    assert view["state"] == "failed"
