"""The console's Pipelines page in a real headless Chromium against a real `gpupool up`:
the list of runs with their states, a run's DAG drawn with every step's state and every
dependency edge, a step's outputs, file names and log, a secret never shown, retry of a
failed run from the page, and a running run whose log follows and which is cancelled from
the page. Screenshots go to tests/artifacts/console/ (not committed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_helpers import finished, gate, py_step, start, step_state
from server_harness import Server, make_server
from test_console import browser, expect, goto, needs_browser, page, shot, sign_in

__all__ = ["browser", "page"]  # fixtures shared with test_console

pytestmark = needs_browser

SECRET = "hunter2-do-not-show"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("console-pl"), "1xA100-80GB")


def diamond(flag: Path) -> dict[str, Any]:
    """prep → (left, right) → join; `right` fails until ``flag`` exists."""
    return {"name": "diamond", "on_failure": "continue", "steps": [
        py_step("prep", "(out / 'rows').write_text('42')\n"
                "(out / 'files').mkdir(exist_ok=True)\n"
                "(out / 'files' / 'data.csv').write_text('a,b')\n"
                "print('prepared', flush=True)", outputs=["rows"], files=["data.csv"]),
        py_step("left", "print('left got ${{ steps.prep.outputs.rows }}', flush=True)"),
        py_step("right", f"sys.exit(0 if pathlib.Path({str(flag)!r}).exists() else 4)",
                depends_on=["prep"]),
        py_step("join", "print('joined', flush=True)", depends_on=["left", "right"]),
    ]}


def test_runs_list_dag_step_log_and_retry(
    server: Server, page: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "right-may-pass"
    with server.client() as c:
        assert c.put("/secrets/DB_PASSWORD", json={"value": SECRET}).status_code == 200
        ok = start(c, {"name": "tiny", "steps": [
            py_step("only", "print('pw', os.environ['DB_PASSWORD'], flush=True)",
                    secrets=[{"name": "DB_PASSWORD"}])]})
        bad = start(c, diamond(flag))
        assert finished(c, ok)["state"] == "succeeded"
        assert finished(c, bad)["state"] == "failed"

    sign_in(page, server, server.token)
    goto(page, server, "/pipelines")
    table = page.get_by_test_id("runs-table")
    expect(table.locator(f"tr[data-run='{ok}'] [data-state]")).to_have_text("succeeded")
    expect(table.locator(f"tr[data-run='{bad}'] [data-state]")).to_have_text("failed")
    expect(table.locator(f"tr[data-run='{bad}']")).to_contain_text("diamond")
    started = table.locator(f"tr[data-run='{bad}'] td[data-label='Started'] time")
    expect(started).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    shot(page, "pipelines-list")

    table.locator(f"tr[data-run='{bad}'] a").first.click()
    dag = page.get_by_test_id("dag")
    expect(dag).to_be_visible()
    states = {"prep": "succeeded", "left": "succeeded", "right": "failed", "join": "skipped"}
    for name, state in states.items():
        expect(dag.locator(f"[data-step='{name}']")).to_have_attribute("data-state", state)
    edges = sorted(e.get_attribute("data-edge") for e in dag.locator(".dag-edge").all())
    assert edges == ["left->join", "prep->left", "prep->right", "right->join"]
    # The failed step is selected first: its message and log are shown.
    detail = page.get_by_test_id("step-detail")
    expect(detail).to_contain_text("Step right")
    expect(detail).to_contain_text("exit code 4")
    dag.locator("[data-step='prep']").click()
    expect(page.get_by_test_id("step-outputs")).to_have_text("rows = 42")
    expect(page.get_by_test_id("step-log")).to_contain_text("prepared")
    # A file by its name; the stored path on the server is not shown.
    expect(page.get_by_test_id("step-files")).to_have_text("data.csv")
    with server.client() as c:
        stored = c.get(f"/pipeline-runs/{bad}").json()["steps"][0]["files"]["data.csv"]
    assert stored.endswith("data.csv") and stored not in page.content()
    shot(page, "pipelines-run")

    # Retry from the page: a new run, and with the flag set it succeeds, reusing prep/left.
    flag.touch()
    page.locator("#retry-run").click()
    expect(page.get_by_test_id("run-state").locator("[data-state]")).to_have_text(
        "succeeded", timeout=60_000)
    dag = page.get_by_test_id("dag")
    expect(dag.locator("[data-step='right']")).to_have_attribute("data-state", "succeeded")
    expect(dag.locator("[data-step='prep']")).to_have_attribute("data-state", "reused")
    new_id = page.url.rsplit("/", 1)[-1]
    assert new_id.isdigit() and new_id != bad
    with server.client() as c:
        assert c.get(f"/pipeline-runs/{new_id}").json()["retry_of"] == bad
    expect(page.locator(f"a[href='#/pipelines/{bad}']")).to_have_text(f"run {bad}")

    # The secret-using run: its log is masked on the page too.
    goto(page, server, f"/pipelines/{ok}")
    expect(page.get_by_test_id("step-log")).to_contain_text("pw ***")
    assert SECRET not in page.content()


def test_running_run_log_follows_and_cancel(server: Server, page: Any, tmp_path: Path) -> None:
    go = tmp_path / "go"
    never = tmp_path / "never"
    with server.client() as c:
        run = start(c, {"name": "slow", "steps": [
            py_step("work", "print('started', flush=True)\n" + gate(go)
                    + "print('gate opened', flush=True)\n" + gate(never)),
            py_step("after", "print('never runs', flush=True)", depends_on=["work"]),
        ]})
        step_state(c, run, "work", "running")

    sign_in(page, server, server.token)
    goto(page, server, f"/pipelines/{run}")
    expect(page.get_by_test_id("run-state").locator("[data-state]")).to_have_text("running")
    dag = page.get_by_test_id("dag")
    expect(dag.locator("[data-step='work']")).to_have_attribute("data-state", "running")
    expect(dag.locator("[data-step='after']")).to_have_attribute("data-state", "waiting")
    assert dag.locator(".dag-edge").get_attribute("data-edge") == "work->after"
    expect(page.locator("#retry-run")).to_have_count(0)
    log = page.get_by_test_id("step-log")
    expect(log).to_contain_text("started")
    # The run's view does not change while the step runs; its log is read again anyway.
    go.touch()
    expect(log).to_contain_text("gate opened")

    page.locator("#cancel-run").click()
    expect(page.locator("#confirm-cancel-run")).to_be_visible()
    shot(page, "pipelines-running")
    page.locator("#confirm-cancel-run").click()
    expect(page.get_by_test_id("run-state").locator("[data-state]")).to_have_text(
        "cancelled", timeout=60_000)
    expect(dag.locator("[data-step='work']")).to_have_attribute("data-state", "cancelled")
    expect(dag.locator("[data-step='after']")).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#cancel-run")).to_have_count(0)
    expect(page.locator("#retry-run")).to_be_visible()
    with server.client() as c:
        assert c.get(f"/pipeline-runs/{run}").json()["state"] == "cancelled"
