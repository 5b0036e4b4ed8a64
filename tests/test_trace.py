"""Trace loading: the real openb files (when present) and every kind of malformed input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gpupool.core.cluster import ClusterState
from gpupool.core.request import RequestError
from gpupool.sim import trace
from gpupool.sim.trace import GPU_MEMORY_MIB, TraceError, load_nodes, load_pods

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "alibaba-gpu-v2023"
POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time"
)
NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model"


def real(name: str) -> Path:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"openb traces not found at {TRACES}: {name} is missing")
    return path


def write(tmp_path: Path, text: str, name: str = "pods.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ real files


def test_default_pod_list():
    pods = load_pods(real("openb_pod_list_default.csv"))
    assert len(pods) == 8152
    assert Counter(p.request.num_gpus for p in pods) == {0: 1088, 1: 6989, 2: 16, 4: 15, 8: 44}
    assert sum(p.request.is_sharing for p in pods) == 3078
    assert round(sum(p.request.total_gpu_milli for p in pods) / 1000, 1) == 6086.8
    first = pods[0]
    assert first.request.name == "openb-pod-0000"
    assert (first.creation_time, first.scheduled_time, first.phase) == (0, 0, "Running")
    assert sum(p.scheduled_time is None for p in pods) == 897
    assert all(p.request.gpu_models == () for p in pods)


def test_gpu_node_list():
    nodes = load_nodes(real("openb_node_list_gpu_node.csv"))
    assert len(nodes) == 1213
    assert sum(len(n.gpus) for n in nodes) == 6212
    assert all(n.labels == {} and n.links is None for n in nodes)
    t4 = next(n for n in nodes if n.gpus and n.gpus[0].model == "T4")
    assert t4.gpus[0].memory_mib == 16 * 1024
    g2 = next(n for n in nodes if n.gpus and n.gpus[0].model == "G2")
    assert g2.gpus[0].memory_mib == 0
    assert ClusterState(nodes).num_nodes == 1213


def test_all_node_list_has_cpu_only_nodes():
    nodes = load_nodes(real("openb_node_list_all_node.csv"))
    assert len(nodes) == 1523
    assert sum(not n.gpus for n in nodes) == 310


def test_five_column_multigpu_file():
    pods = load_pods(real("openb_pod_list_multigpu20.csv"))
    assert len(pods) == 8324
    assert all(p.creation_time is None and p.phase == "" for p in pods)
    assert sum(p.request.total_gpu_milli for p in pods) == 7_086_800


def test_gpuspec_file_splits_models():
    pods = load_pods(real("openb_pod_list_gpuspec33.csv"))
    constrained = [p.request.gpu_models for p in pods if p.request.gpu_models]
    assert len(constrained) == 2388
    assert ("V100M16", "V100M32") in constrained
    assert all(len(set(m)) == len(m) for m in constrained)


# ------------------------------------------------------------ good small files


def test_small_pod_file_fields(tmp_path: Path):
    path = write(
        tmp_path,
        POD_HEADER + "\n"
        "p0,4000,8192,0,0,,BE,Pending,10,,\n"
        "\n"
        "p1,6000,12288,1,460,T4|P100,LS,Running,20,80,21\n"
        "p2,8000,1024,2,1000,,LS,Failed,30,40,31\n",
    )
    p0, p1, p2 = load_pods(path)
    assert p0.request.num_gpus == 0 and p0.request.gpu_milli == 0
    assert (p0.creation_time, p0.deletion_time, p0.scheduled_time) == (10, None, None)
    assert p0.phase == "Pending"
    assert p1.request.gpu_models == ("T4", "P100") and p1.request.is_sharing
    assert (p1.creation_time, p1.deletion_time, p1.scheduled_time) == (20, 80, 21)
    assert p2.request.total_gpu_milli == 2000 and p2.phase == "Failed"


def test_columns_found_by_name_and_extras_ignored(tmp_path: Path):
    path = write(tmp_path, "gpu_milli,extra,num_gpu,name,memory_mib,cpu_milli\n500,x,1,a,64,1000\n")
    (pod,) = load_pods(path)
    assert (pod.request.name, pod.request.cpu_milli, pod.request.gpu_milli) == ("a", 1000, 500)
    assert pod.creation_time is None and pod.phase == ""


def test_small_node_file(tmp_path: Path):
    path = write(tmp_path, NODE_HEADER + "\nn0,8000,1024,0,T4\nn1,96000,4096,4,V100M32\n", "n.csv")
    n0, n1 = load_nodes(path)
    assert n0.gpus == ()
    assert len(n1.gpus) == 4 and n1.gpus[0].model == "V100M32"
    assert n1.gpus[0].memory_mib == GPU_MEMORY_MIB["V100M32"] == 32 * 1024


# --------------------------------------------------------------- bad input

ROW = "p,1000,64,1,1000,,LS,Running,0,1,0"

BAD_PODS = [
    # (case id, file text, expected row, expected column, text expected in the message)
    ("empty file", "", None, None, "empty"),
    ("blank lines only", "\n\n", None, None, "empty"),
    ("header only", POD_HEADER + "\n", None, None, "no data rows"),
    ("missing column", "name,cpu_milli,memory_mib,num_gpu\np,1,1,0\n", 1, "gpu_milli", "needs"),
    ("node list as pods", NODE_HEADER + "\nn,1,1,0,\n", 1, "name", "load_nodes"),
    ("not an integer", f"{POD_HEADER}\n{ROW}\np,abc,64,0,0,,,,,,\n", 3, "cpu_milli", "'abc'"),
    ("decimal", f"{POD_HEADER}\np,1.5,64,0,0,,,,,,\n", 2, "cpu_milli", "'1.5'"),
    ("empty number", f"{POD_HEADER}\np,1000,,0,0,,,,,,\n", 2, "memory_mib", "empty"),
    ("negative", f"{POD_HEADER}\np,1000,64,-1,0,,,,,,\n", 2, "num_gpu", "-1 is negative"),
    ("share above one GPU", f"{POD_HEADER}\np,1,1,1,1200,,,,,,\n", 2, "gpu_milli", "1200"),
    ("multi-GPU share", f"{POD_HEADER}\np,1,1,2,500,,,,,,\n", 2, "gpu_milli", "500"),
    ("CPU pod with share", f"{POD_HEADER}\np,1,1,0,300,,,,,,\n", 2, "gpu_milli", "300"),
    ("GPU pod without share", f"{POD_HEADER}\np,1,1,1,0,,,,,,\n", 2, "gpu_milli", "num_gpu 1"),
    ("too few fields", f"{POD_HEADER}\n{ROW}\np,1,1,0,0\n", 3, "gpu_spec", "5 fields"),
    ("too many fields", f"{POD_HEADER}\n{ROW},x\n", 2, None, "12 fields"),
    ("bad time", f"{POD_HEADER}\np,1,1,0,0,,,,x1,,\n", 2, "creation_time", "'x1'"),
    ("line after blank", f"{POD_HEADER}\n{ROW}\n\np,1,1,0,9,,,,,,\n", 4, "gpu_milli", "9"),
    ("empty name", f"{POD_HEADER}\n ,1,1,0,0,,,,,,\n", 2, "name", "empty pod name"),
    ("bad quoting", f'{POD_HEADER}\n{ROW}\np,"1"x,1,0,0,,,,,,\n', 3, None, "not valid CSV"),
    ("unclosed quote", f'{POD_HEADER}\n{ROW}\np,"1,1,0,0,,,,,,\n', 3, None, "not valid CSV"),
]

BAD_NODES = [
    ("non-integer gpu", f"{NODE_HEADER}\nn,1,1,two,T4\n", 2, "gpu", "'two'"),
    ("GPU node without model", f"{NODE_HEADER}\nn,1,1,2,\n", 2, "model", "2 GPUs"),
    ("repeated name", f"{NODE_HEADER}\nn,1,1,0,\nm,1,1,0,\nn,1,1,0,\n", 4, "sn", "row 2"),
    ("negative memory", f"{NODE_HEADER}\nn,1,-5,0,\n", 2, "memory_mib", "-5"),
    ("pod list as nodes", f"{POD_HEADER}\n{ROW}\n", 1, "sn", "load_pods"),
    ("too few fields", f"{NODE_HEADER}\nn,1,1,0\n", 2, "model", "4 fields"),
]


def check(err: TraceError, path: Path, row: int | None, column: str | None, text: str) -> None:
    message = str(err)
    assert (err.row, err.column) == (row, column), message
    assert "\n" not in message
    assert path.name in message
    assert text in message


@pytest.mark.parametrize(
    ("text", "row", "column", "fragment"), [c[1:] for c in BAD_PODS], ids=[c[0] for c in BAD_PODS]
)
def test_bad_pod_files(
    tmp_path: Path, text: str, row: int | None, column: str | None, fragment: str
):
    path = write(tmp_path, text, "openb_pod_list_x.csv")
    with pytest.raises(TraceError) as info:
        load_pods(path)
    check(info.value, path, row, column, fragment)


@pytest.mark.parametrize(
    ("text", "row", "column", "fragment"), [c[1:] for c in BAD_NODES], ids=[c[0] for c in BAD_NODES]
)
def test_bad_node_files(
    tmp_path: Path, text: str, row: int | None, column: str | None, fragment: str
):
    path = write(tmp_path, text, "openb_node_list_x.csv")
    with pytest.raises(TraceError) as info:
        load_nodes(path)
    check(info.value, path, row, column, fragment)


def test_example_message(tmp_path: Path):
    path = write(tmp_path, f"{POD_HEADER}\np,1,1,1,1200,,,,,,\n", "openb_pod_list_x.csv")
    with pytest.raises(TraceError) as info:
        load_pods(path)
    assert str(info.value) == (
        f"{path}, row 2, column 'gpu_milli': 1200 is above 1000 (one whole GPU)"
    )


@pytest.mark.parametrize("loader", [load_pods, load_nodes])
def test_missing_file_and_folder(tmp_path: Path, loader):
    for path, fragment in ((tmp_path / "nope.csv", "not found"), (tmp_path, "folder")):
        with pytest.raises(TraceError) as info:
            loader(path)
        check(info.value, path, None, None, fragment)


def test_not_utf8(tmp_path: Path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError) as info:
        load_pods(path)
    check(info.value, path, None, None, "UTF-8")


def test_request_error_becomes_trace_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def refuse(*args: object, **kwargs: object) -> None:
        raise RequestError("request 'p': refused")

    monkeypatch.setattr(trace, "Request", refuse)
    path = write(tmp_path, f"{POD_HEADER}\n{ROW}\n")
    with pytest.raises(TraceError) as info:
        load_pods(path)
    check(info.value, path, 2, None, "refused")
