"""`gpupool sim` as a user runs it: a real process, real files, exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GOOD_NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,65536,2,T4\nn1,64000,131072,4,V100M32\n"
GOOD_PODS = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
    "p0,4000,8192,1,500,,LS,Running,0,100,0\n"
    "p1,8000,8192,2,1000,,LS,Running,10,50,10\n"
    "p2,2000,1024,0,0,,BE,Running,20,30,20\n"
    "p3,4000,8192,1,250,V100M32,LS,Running,30,200,30\n"
)


def gpupool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpupool.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_synthetic_study_writes_table_json_and_plot(tmp_path: Path) -> None:
    result = gpupool(
        "sim",
        "--scale",
        "0.05",
        "-p",
        "fgd",
        "-p",
        "bestfit",
        "-s",
        "1",
        "-s",
        "2",
        "--json",
        "out.json",
        "--plot",
        "out.png",
        "--workers",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "fgd" in result.stdout and "bestfit" in result.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["meta"]["seeds"] == [1, 2]
    for policy in ("fgd", "bestfit"):
        entry = data["policies"][policy]
        for metric in ("unallocated_gpu_pct", "frag_pct", "frag_ratio_pct"):
            assert list(entry[metric]) == [str(x) for x in range(131)]
        assert entry["unallocated_gpu_pct"]["0"] > 99.0  # nothing allocated yet
        assert 0.0 <= entry["unallocated_gpu_pct"]["100"] < 40.0
        assert entry["decisions_per_second"] > 0
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trace_files_and_timed_mode(tmp_path: Path) -> None:
    (tmp_path / "nodes.csv").write_text(GOOD_NODES)
    (tmp_path / "pods.csv").write_text(GOOD_PODS)
    result = gpupool(
        "sim",
        "--nodes",
        "nodes.csv",
        "--pods",
        "pods.csv",
        "--mode",
        "timed",
        "-p",
        "bestfit",
        "--json",
        "timed.json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "timed.json").read_text())["runs"][0]
    assert run["placed"] == 4 and run["never_placed"] == 0
    assert run["queue_delay_p95_s"] == 0.0
    # 0.5 GPU x 100 s + 2 GPUs x 40 s + 0.25 GPU x 170 s = 172.5 GPU-seconds
    assert run["gpu_hours_served"] == pytest.approx(172.5 / 3600)


@pytest.mark.parametrize(
    ("pods_csv", "row", "column"),
    [
        (GOOD_PODS.replace("p1,8000,8192,2,1000", "p1,8000,8192,2,abc"), 3, "gpu_milli"),
        (GOOD_PODS.replace("p2,2000,1024", "p2,-2000,1024"), 4, "cpu_milli"),
        (GOOD_PODS.replace("p0,4000,8192,1,500", "p0,4000,8192,1,1500"), 2, "gpu_milli"),
    ],
)
def test_malformed_trace_is_one_line_with_file_row_column_and_exit_2(
    tmp_path: Path, pods_csv: str, row: int, column: str
) -> None:
    (tmp_path / "nodes.csv").write_text(GOOD_NODES)
    (tmp_path / "pods.csv").write_text(pods_csv)
    result = gpupool("sim", "--nodes", "nodes.csv", "--pods", "pods.csv", cwd=tmp_path)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "Traceback" not in result.stderr
    assert len(message.splitlines()) == 1, message
    assert "pods.csv" in message and f"row {row}" in message and f"'{column}'" in message


def test_missing_column_is_reported(tmp_path: Path) -> None:
    (tmp_path / "nodes.csv").write_text(GOOD_NODES.replace(",model", ",kind"))
    (tmp_path / "pods.csv").write_text(GOOD_PODS)
    result = gpupool("sim", "--nodes", "nodes.csv", "--pods", "pods.csv", cwd=tmp_path)
    assert result.returncode == 2
    assert "nodes.csv" in result.stderr and "'model'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--nodes", "nodes.csv"), "give both --nodes and --pods"),
        (("-p", "nosuch"), "unknown policy 'nosuch'"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    (tmp_path / "nodes.csv").write_text(GOOD_NODES)
    result = gpupool("sim", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr


def test_the_admission_ablation_is_offered_for_studies(tmp_path: Path) -> None:
    """``gpupool-place-all`` (gpupool without its loss-system admission) runs beside
    ``gpupool``; both reach the JSON, and the online policy never does worse than fgd here."""
    result = gpupool(
        "sim", "--scale", "0.1", "-p", "fgd", "-p", "gpupool", "-p", "gpupool-place-all",
        "--json", "out.json", "--workers", "1", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert set(data["policies"]) == {"fgd", "gpupool", "gpupool-place-all"}
    at_100 = {p: data["policies"][p]["unallocated_gpu_pct"]["100"] for p in data["policies"]}
    assert at_100["gpupool"] < at_100["fgd"]
