"""The multi-team workload CSV and queue YAML: round trips, defaults, and one-line errors that
name the file, the line and the column (or the team)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupool.sim.workload import (
    WORKLOAD_COLUMNS,
    QueueError,
    TeamQueue,
    WorkloadError,
    WorkloadJob,
    load_queues,
    load_workload,
    write_workload,
)

HEADER = ",".join(WORKLOAD_COLUMNS)
GOOD = (
    HEADER + "\n"
    "a,vision,ann,10,100,1,500,4000,8192,,0,,1\n"
    "b,nlp,bob,0,60.5,8,1000,32000,65536,A100,5,3600,2\n"
    "c,vision,ann,10,1,1,1000,0,0,,-3,7.5,\n"
)


def job(**kw: object) -> WorkloadJob:
    base: dict[str, object] = dict(job_id="j", team="t", user="u", submit_time=0.0,
                                   duration=1.0, num_gpu=1, gpu_milli=1000, cpu_milli=0,
                                   memory_mib=0, gpu_spec="", priority=0, time_limit=None)
    return WorkloadJob(**{**base, **kw})  # type: ignore[arg-type]


def write(tmp_path: Path, text: str, name: str = "w.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_every_field_sorted_by_submit_then_file_order(tmp_path: Path) -> None:
    jobs = load_workload(write(tmp_path, GOOD))
    assert [j.job_id for j in jobs] == ["b", "a", "c"]
    b, a, c = jobs
    assert b == WorkloadJob("b", "nlp", "bob", 0.0, 60.5, 8, 1000, 32000, 65536, "A100", 5,
                            3600.0, nodes=2)
    assert a.gpu_milli == 500 and a.time_limit is None and a.nodes == 1
    assert c.priority == -3 and c.time_limit == 7.5 and c.nodes == 1  # empty nodes cell: 1
    assert (a.gpus, b.gpus, c.gpus) == (0.5, 16.0, 1.0)


def test_nodes_column_is_optional_and_other_columns_are_ignored(tmp_path: Path) -> None:
    cols = [c for c in WORKLOAD_COLUMNS if c != "nodes"]
    text = ",".join(["note", *reversed(cols)]) + "\n" + ",".join(
        ["hello", *reversed(["x", "t", "u", "5", "9", "2", "1000", "1", "2", "", "0", ""])]
    ) + "\n"
    (only,) = load_workload(write(tmp_path, text))
    assert (only.job_id, only.submit_time, only.num_gpu, only.nodes) == ("x", 5.0, 2, 1)


def test_write_then_load_gives_the_same_jobs(tmp_path: Path) -> None:
    jobs = [job(job_id="x", submit_time=3.25, duration=7.0, time_limit=10.0, nodes=3,
                num_gpu=4, gpu_spec="V100M32|T4", user="", priority=-2),
            job(job_id="y,z", team="t 2", gpu_milli=250, duration=1e-3)]
    path = tmp_path / "out.csv"
    write_workload(path, jobs)
    assert path.read_text().splitlines()[0] == ",".join(WORKLOAD_COLUMNS)
    assert load_workload(path) == sorted(jobs, key=lambda j: j.submit_time)


@pytest.mark.parametrize(
    ("old", "new", "line", "column", "words"),
    [
        (",duration,", ",runtime,", 1, "duration", "missing required column"),
        ("a,vision,ann,10,", "a,vision,ann,ten,", 2, "submit_time", "not a number"),
        ("a,vision,ann,10,100", "a,vision,ann,10,-100", 2, "duration", "negative"),
        ("a,vision,ann,10,100", "a,vision,ann,10,nan", 2, "duration", "finite"),
        ("c,vision", "a,vision", 4, "job_id", "already defined on line 2"),
        ("a,vision,ann,10,100,1,500", "a,vision,ann,10,100,2,500", 2, "gpu_milli",
         "only a one-GPU"),
        ("b,nlp,bob,0,60.5,8,1000", "b,nlp,bob,0,60.5,8,1001", 3, "gpu_milli", "1..1000"),
        ("a,vision,ann,10,100,1,500", "a,vision,ann,10,100,0,0", 2, "num_gpu",
         "at least one GPU"),
        ("a,vision,ann,10,100,1,500,4000", "a,vision,ann,10,100,1,500,-4", 2, "cpu_milli",
         "negative"),
        ("b,nlp,bob", "b,,bob", 3, "team", "empty team"),
        (",3600,2\n", ",0,2\n", 3, "time_limit", "leave it empty"),
        (",3600,2\n", ",3600,0\n", 3, "nodes", "0 nodes"),
        (",3600,2\n", ",3600\n", 3, "nodes", "fields but the header has"),
        ("a,vision,ann,10,100,1,500", "a,vision,ann,10,100,1,500x", 2, "gpu_milli",
         "not a whole number"),
        (",5,3600", ",5.5,3600", 3, "priority", "not a whole number"),
    ],
)
def test_malformed_rows_name_file_line_and_column(
    tmp_path: Path, old: str, new: str, line: int, column: str, words: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(WorkloadError) as info:
        load_workload(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert (info.value.row, info.value.column) == (line, column), message
    assert message.startswith(f"{path}, row {line}, column '{column}': "), message
    assert words in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "file is empty"), (HEADER + "\n", "no data rows"), ('a,"b\n', "not valid CSV")],
)
def test_files_that_are_not_workloads(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(WorkloadError, match=words):
        load_workload(write(tmp_path, text))
    with pytest.raises(WorkloadError, match="file not found"):
        load_workload(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "kw",
    [dict(duration=-1.0), dict(num_gpu=0), dict(gpu_milli=0), dict(num_gpu=2, gpu_milli=500),
     dict(nodes=2, gpu_milli=500), dict(time_limit=0.0), dict(team=""),
     dict(submit_time=float("inf"))],
)
def test_a_job_checks_its_own_invariants(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="job 'j'"):
        job(**kw)


# ---- queues ---------------------------------------------------------------------------------

QUEUES = """\
teams:
  - {name: vision, quota_gpus: 16, borrow_limit_gpus: 32, weight: 2, cohort: lab}
  - name: nlp
    quota_gpus: 8.5
    borrow_limit_gpus: 0
    lend_limit_gpus: 4
"""


def test_queues_with_defaults(tmp_path: Path) -> None:
    assert load_queues(write(tmp_path, QUEUES, "q.yaml")) == [
        TeamQueue("vision", 16.0, 32.0, 2.0, "lab", None),
        TeamQueue("nlp", 8.5, 0.0, 1.0, None, 4.0),
    ]


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("weight: 2,", "weight: 0,", "team 'vision': 'weight' must be a number > 0"),
        ("weight: 2,", "weight: -1,", "'weight' must be a number > 0"),
        ("weight: 2,", "wieght: 2,", "team 'vision': unknown key(s) wieght"),
        ("name: nlp", "name: vision", "line 3: team 'vision': name used twice"),
        ("    quota_gpus: 8.5\n", "", "line 3: team 'nlp': missing 'quota_gpus'"),
        ("quota_gpus: 8.5", "quota_gpus: true", "'quota_gpus' must be a number of GPUs"),
        ("quota_gpus: 8.5", "quota_gpus: -1", "team 'nlp'"),
        ("name: nlp", "name: ''", "team #2: 'name' must be a non-empty string"),
        ("cohort: lab", "cohort: [lab]", "'cohort' must be a name"),
        ("lend_limit_gpus: 4\n", "lend_limit_gpus: 4\nextra: 1\n", "unknown top-level key(s)"),
        ("teams:", "groups:", "expected a mapping with a 'teams' list"),
        ("{name: vision", "{name: [vision", "not valid YAML"),
    ],
)
def test_bad_queues_name_the_file_and_the_team(
    tmp_path: Path, old: str, new: str, words: str
) -> None:
    assert old in QUEUES
    path = write(tmp_path, QUEUES.replace(old, new, 1), "q.yaml")
    with pytest.raises(QueueError) as info:
        load_queues(path)
    assert str(info.value).startswith(str(path)) and words in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)
