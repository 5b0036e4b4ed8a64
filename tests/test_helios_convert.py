"""The Helios / Acme job-log converter (sim/helios.py) and its script, on small logs written
here in the Helios ``cluster_log.csv`` format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpupool.sim.helios import ConversionSummary, convert_helios, read_helios
from gpupool.sim.workload import WorkloadError, load_workload

REPO = Path(__file__).resolve().parent.parent
HEADER = ("job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,"
          "duration,queue\n")
LOG = HEADER + (
    # submitted 7 s after the first one; 12 GPUs on 2 nodes -> 6 per node
    "j2,u1,vcA,12,48,2,COMPLETED,2020-04-01 00:00:07,2020-04-01 00:00:09,2020-04-01 00:01:09,60,2\n"
    # the first submit; 10 GPUs on 4 nodes -> ceil(2.5) = 3 per node
    "j1,u2,vcB,10,8,4,FAILED,2020-04-01 00:00:00,2020-04-01 00:00:00,2020-04-01 00:00:30,30,0\n"
    # a CPU job: skipped
    "j3,u1,vcA,0,4,1,COMPLETED,2020-04-01 00:00:01,2020-04-01 00:00:01,2020-04-01 00:00:02,1,0\n"
    # no duration: end - start; pandas-style float counts
    "j4,u3,vcA,1.0,2.0,1.0,CANCELLED,2020-04-01 01:00:00,2020-04-01 01:00:10,"
    "2020-04-01 01:02:10,,10\n"
    # unreadable GPU count, then a repeated id: skipped as bad
    "j5,u3,vcA,x,2,1,COMPLETED,2020-04-01 00:00:00,,,5,0\n"
    "j1,u3,vcA,1,2,1,COMPLETED,2020-04-01 00:00:00,,,5,0\n"
    # cancelled before it started: kept, with a run time of 0
    "j6,u3,vcC,2,2,,CANCELLED,2020-04-02 00:00:00,,,0,0\n"
)


def test_converts_helios_rows_into_workload_jobs(tmp_path: Path) -> None:
    src, dst = tmp_path / "cluster_log.csv", tmp_path / "w.csv"
    src.write_text(LOG)
    summary = convert_helios(src, dst)
    assert summary.jobs == 4 and summary.skipped_cpu == 1 and summary.skipped_bad == 2
    assert summary.first_bad.startswith("line 6, column 'gpu_num'")
    jobs = {j.job_id: j for j in load_workload(dst)}
    assert list(jobs) == ["j1", "j2", "j4", "j6"]  # by submit time
    j1, j2, j4, j6 = jobs.values()
    assert (j1.team, j1.user, j1.submit_time, j1.duration) == ("vcB", "u2", 0.0, 30.0)
    assert (j1.num_gpu, j1.nodes, j1.gpu_milli, j1.cpu_milli) == (3, 4, 1000, 2000)
    assert (j2.submit_time, j2.num_gpu, j2.nodes, j2.cpu_milli) == (7.0, 6, 2, 24000)
    assert (j4.submit_time, j4.duration, j4.num_gpu, j4.nodes) == (3600.0, 120.0, 1, 1)
    assert (j6.submit_time, j6.duration, j6.nodes) == (86400.0, 0.0, 1)
    assert all(j.memory_mib == 0 and j.priority == 0 and j.time_limit is None
               and j.gpu_spec == "" for j in jobs.values())


def test_times_in_seconds_and_start_end_without_a_duration_column(tmp_path: Path) -> None:
    src = tmp_path / "acme.csv"
    src.write_text("job_id,user,vc,gpu_num,cpu_num,node_num,submit_time,start_time,end_time\n"
                   "a,u,t,8,16,1,1000,1010,1110.5\n"
                   "b,u,t,4,,1,900,950,940\n")  # ends before it starts: bad
    jobs, summary = read_helios(src)
    assert summary == ConversionSummary(1, 0, 1, summary.first_bad)
    assert "column 'end_time'" in summary.first_bad
    (a,) = jobs
    assert (a.submit_time, a.duration, a.num_gpu, a.cpu_milli) == (0.0, 100.5, 8, 16000)


@pytest.mark.parametrize(
    ("text", "column"),
    [(HEADER.replace(",vc,", ",team,") + "x", "vc"),
     (HEADER.replace(",duration,", ",dur,").replace(",end_time,", ",e,") + "x", "duration"),
     (HEADER + "j,u,v,1\n", "cpu_num")],
)
def test_a_file_that_is_not_a_job_log_is_an_error(tmp_path: Path, text: str,
                                                   column: str) -> None:
    src = tmp_path / "log.csv"
    src.write_text(text)
    with pytest.raises(WorkloadError) as info:
        convert_helios(src, tmp_path / "w.csv")
    assert info.value.column == column and str(src) in str(info.value)
    assert not (tmp_path / "w.csv").exists()


def test_the_script(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(LOG)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "helios_convert.py"),
                           "log.csv", "w.csv"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "4 GPU jobs written to w.csv; skipped 1 CPU jobs and 2 unreadable rows" in done.stdout
    assert len(load_workload(tmp_path / "w.csv")) == 4
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "helios_convert.py"),
                          "nope.csv", "w.csv"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "nope.csv: file not found" in bad.stderr
