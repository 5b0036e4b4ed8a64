"""``gpupool sim --mode timed --workload``: the team path of the CLI. The wiring (options,
inputs, JSON, errors) is checked with a stand-in engine; one run goes through the real engine
(``gpupool.sim.team_timed``) when it is importable."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.sim.team_metrics import METRIC_KEYS, JobRecord
from gpupool.sim.workload import WORKLOAD_COLUMNS

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,4,V100M32\nn1,64000,262144,4,V100M32\n"
WORKLOAD = ",".join(WORKLOAD_COLUMNS) + "\n" + (
    "a1,A,ann,0,100,4,1000,8000,8192,,0,,1\n"
    "a2,A,ann,0,100,4,1000,8000,8192,,0,,1\n"
    "a3,A,ann,0,100,4,1000,8000,8192,,0,,1\n"
    "b1,B,bob,10,50,1,500,2000,4096,,0,,1\n"
    "b2,B,bob,20,50,2,1000,2000,4096,,0,200,1\n"
)
QUEUES = ("teams:\n  - {name: A, quota_gpus: 4, borrow_limit_gpus: 8}\n"
          "  - {name: B, quota_gpus: 4, borrow_limit_gpus: 8, weight: 2}\n")
HAS_ENGINE = importlib.util.find_spec("gpupool.sim.team_timed") is not None


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nodes.csv").write_text(NODES)
    (tmp_path / "w.csv").write_text(WORKLOAD)
    (tmp_path / "q.yaml").write_text(QUEUES)
    return tmp_path


def sim(*args: str) -> Any:
    return CliRunner().invoke(app, ["sim", "--mode", "timed", "--nodes", "nodes.csv", *args],
                              terminal_width=120)


@pytest.fixture()
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A fake ``gpupool.sim.team_timed``: every job starts at its submit and runs its
    duration; the calls it got are recorded."""
    calls: list[dict[str, Any]] = []

    def run_team_timed(nodes: Any, jobs: Any, teams: Any, policy: str, order: str = "fairshare",
                       backfill: bool = True, whole_gpus: bool = False, seed: int = 0) -> Any:
        calls.append(dict(nodes=nodes, jobs=jobs, teams=teams, policy=policy, order=order,
                          backfill=backfill, whole_gpus=whole_gpus, seed=seed))
        records = [JobRecord(j.job_id, j.team, j.user, j.submit_time, j.submit_time,
                             j.submit_time + j.duration, j.gpus) for j in jobs]
        return types.SimpleNamespace(records=records, preemptions=0, seconds=0.01)

    module = types.ModuleType("gpupool.sim.team_timed")
    module.run_team_timed = run_team_timed  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gpupool.sim.team_timed", module)
    return calls


def test_options_reach_the_engine_and_the_json(files: Path,
                                               stand_in: list[dict[str, Any]]) -> None:
    result = sim("--workload", "w.csv", "--queues", "q.yaml", "-p", "bestfit", "-p", "fgd",
                 "-s", "1", "-s", "2", "--order", "fifo", "--no-backfill", "--whole-gpus",
                 "--json", "out.json")
    assert result.exit_code == 0, result.output
    assert [(c["policy"], c["seed"]) for c in stand_in] == [("bestfit", 1), ("bestfit", 2),
                                                             ("fgd", 1), ("fgd", 2)]
    call = stand_in[0]
    assert (call["order"], call["backfill"], call["whole_gpus"]) == ("fifo", False, True)
    assert [t.name for t in call["teams"]] == ["A", "B"] and call["teams"][1].weight == 2.0
    assert [j.job_id for j in call["jobs"]] == ["a1", "a2", "a3", "b1", "b2"]
    assert len(call["nodes"]) == 2
    data = json.loads((files / "out.json").read_text())
    assert data["meta"] == {"mode": "timed", "workload": "w.csv", "nodes": "nodes.csv",
                            "queues": "q.yaml", "jobs": 5, "teams": ["A", "B"],
                            "capacity_gpus": 8.0}
    run = data["runs"][0]
    assert list(run) == ["policy", "order", "backfill", "whole_gpus", "seed", *METRIC_KEYS]
    assert (run["policy"], run["order"], run["backfill"], run["whole_gpus"]) == (
        "bestfit", "fifo", False, True)
    assert run["wait_max_s"] == 0.0 and run["makespan_s"] == 100.0
    # 3 x 4 GPUs x 100 s + 0.5 x 50 + 2 x 50 over 8 GPUs x 100 s
    assert run["gpu_alloc_pct"] == pytest.approx(100 * 1325 / 800)
    assert "bestfit" in result.stdout and "fifo, backfill off" in result.stdout


def test_defaults_without_queues(files: Path, stand_in: list[dict[str, Any]]) -> None:
    result = sim("--workload", "w.csv")
    assert result.exit_code == 0, result.output
    (call,) = stand_in
    assert (call["policy"], call["seed"], call["order"], call["backfill"]) == (
        "gpupool", 42, "fairshare", True)
    assert [(t.name, t.quota_gpus, t.borrow_limit_gpus) for t in call["teams"]] == [
        ("A", 4.0, 8.0), ("B", 4.0, 8.0)]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--queues", "q.yaml"), "go with --workload FILE"),
        (("--no-backfill",), "go with --workload FILE"),
        (("--workload", "w.csv", "--pods", "w.csv"), "give --workload or --pods, not both"),
        (("--workload", "w.csv", "--plot", "p.png"), "--plot is not drawn"),
        (("--workload", "w.csv", "--speedup", "2"), "--speedup applies to --pods"),
        (("--workload", "w.csv", "-p", "gpupool-file"), "unknown policy 'gpupool-file'"),
        (("--workload", "nope.csv"), "nope.csv: file not found"),
        (("--workload", "q.yaml"), "missing required column"),
        (("--workload", "w.csv", "--queues", "w.csv"), "w.csv: expected a mapping"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(files: Path, stand_in: list[dict[str, Any]],
                                             args: tuple[str, ...], words: str) -> None:
    result = sim(*args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not stand_in


def test_workload_needs_timed_mode(files: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "--workload", "w.csv"])
    assert result.exit_code == 2 and "add --mode timed" in result.stderr


def test_a_team_without_a_queue_is_named(files: Path, stand_in: list[dict[str, Any]]) -> None:
    (files / "q.yaml").write_text("teams:\n  - {name: A, quota_gpus: 8, borrow_limit_gpus: 8}\n")
    result = sim("--workload", "w.csv", "--queues", "q.yaml")
    assert result.exit_code == 2
    assert "job 'b1' is of team 'B', which has no queue in q.yaml" in result.stderr


def test_malformed_workload_names_line_and_column(files: Path) -> None:
    (files / "w.csv").write_text(WORKLOAD.replace("b2,B,bob,20", "b2,B,bob,-20"))
    result = sim("--workload", "w.csv")
    assert result.exit_code == 2
    assert "w.csv, row 6, column 'submit_time': -20 is negative" in result.stderr


@pytest.mark.skipif(not HAS_ENGINE, reason="engine not written yet")
def test_the_real_engine_runs_the_workload(files: Path) -> None:
    result = sim("--workload", "w.csv", "--queues", "q.yaml", "-p", "bestfit", "--json", "o.json")
    assert result.exit_code == 0, result.output
    (run,) = json.loads((files / "o.json").read_text())["runs"]
    assert run["never_started"] == 0 and run["makespan_s"] > 0
    assert set(run["teams"]) == {"A", "B"} and 0 < run["jain_fairness"] <= 1
