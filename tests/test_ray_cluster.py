"""gpupool on a real multi-node Ray cluster on loopback (issue 4).

One cluster for the module: a head (no GPU) and three raylets, each with its own fake GPUs
and rack label: n1 and n2 in rack r1, n3 in rack r2. One `gpupool up --ray` server on it.
The node-loss test runs last: it kills a raylet.

Run as root (as CI does), jobs run as their owner's account (the admin's, which the server
creates), sandboxed, with a clean environment: they can only reach files under /tmp that
are bound into their sandbox (their workdir), and run the venv's interpreter only when
every account can.
"""

from __future__ import annotations

import io
import json
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpupool.executors import accounts
from gpupool.executors.interpreter import job_python
from ray_cluster import LoopbackCluster, job_reachable_dir, private_home, ray_available
from server_harness import Server, wait_for

pytestmark = pytest.mark.skipif(ray_available() is not None, reason=ray_available() or "")

WORKERS = {"n1": "r1", "n2": "r1", "n3": "r2"}

VENV_FOR_JOBS = job_python() == sys.executable
"""Jobs get this venv's interpreter (every account can run it), else the system's python3."""
PY = sys.executable if VENV_FOR_JOBS else "python3"
NEEDS_VENV = (f"jobs run as other accounts, which cannot run {sys.executable} (and its "
              "torch): make the venv readable and searchable by all")
SERVER_MARKER = "GPUPOOL_TEST_SERVER_MARKER"

ENV_PROBE = (
    "import os; print('probe', os.environ.get('GPUPOOL_NODE_NAME'), "
    "os.environ['CUDA_VISIBLE_DEVICES'], os.environ['GPUPOOL_JOB_DIR'], flush=True)"
)

ALL_REDUCE = """
import os, socket
import torch
import torch.distributed as dist
keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
        "MASTER_PORT", "CUDA_VISIBLE_DEVICES", "GPUPOOL_NODE_NAME")
env = {k: os.environ[k] for k in keys}
dist.init_process_group("gloo", init_method="env://")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print("allreduce", " ".join(f"{k}={v}" for k, v in env.items()), f"sum={t.item():g}",
      f"rank={dist.get_rank()}", f"world={dist.get_world_size()}", flush=True)
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    c = LoopbackCluster()
    try:
        c.start_head()
        for name, rack in WORKERS.items():
            c.add_node(name, "2xA100-80GB", f"rack={rack}")
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def server(cluster: LoopbackCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("ray") / "home"
    home.mkdir()
    s = Server(home, "", "", extra_args=("--ray", cluster.address),
               extra_env={**private_home(cluster.temp_dir), SERVER_MARKER: "server-only"},
               isolated=True)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory for files a job reads (its workdir: the sandbox binds it in)."""
    path = job_reachable_dir("gps")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def submit(c: httpx.Client, **spec: object) -> str:
    response = c.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job(c: httpx.Client, job_id: str) -> dict[str, Any]:
    view: dict[str, Any] = c.get(f"/jobs/{job_id}").json()
    return view


def final(c: httpx.Client, job_id: str, timeout: float = 90) -> dict[str, Any]:
    view: dict[str, Any] = wait_for(lambda: (j := job(c, job_id))["phase"] in
                                    ("succeeded", "failed", "cancelled") and j,
                                    timeout=timeout)
    return view


def log_text(c: httpx.Client, job_id: str) -> str:
    return str(c.get(f"/jobs/{job_id}/logs", params={"limit": 1 << 20}).json()["data"])


def test_every_ray_node_is_a_gpupool_node_with_its_gpus_and_labels(server: Server) -> None:
    with server.client() as c:
        nodes = {n["name"]: n for n in wait_for(lambda: len(c.get("/nodes").json()) == 4
                                                and c.get("/nodes").json(), timeout=30)}
    assert set(nodes) == {"head", *WORKERS}
    for name, rack in WORKERS.items():
        assert [g["model"] for g in nodes[name]["gpus"]] == ["A100", "A100"]
        assert nodes[name]["labels"] == {"rack": rack}
    assert nodes["head"]["gpus"] == []


def node_root(cluster: LoopbackCluster, node: str) -> Path:
    """The agent's directory of one of the cluster's worker nodes."""
    (root,) = cluster.agent_dir.glob(f"*/{cluster.nodes[node].node_id[:16]}")
    return root


def test_a_task_runs_on_the_node_and_gpus_the_scheduler_chose(
    server: Server, cluster: LoopbackCluster
) -> None:
    with server.client() as c:
        ids = [submit(c, command=[PY, "-c", ENV_PROBE], gpus=1, name=f"probe{i}")
               for i in range(3)]
        for job_id in ids:
            view = final(c, job_id)
            assert view["phase"] == "succeeded", view
            placement = view["placement"]
            assert placement["node"] in WORKERS
            line = next(x for x in log_text(c, job_id).splitlines() if x.startswith("probe"))
            _, name, gpus, job_dir = line.split()
            assert (name, gpus) == (placement["node"], ",".join(map(str, placement["gpus"])))
            # The process ran where gpupool placed it: its job dir is that node agent's.
            assert job_dir == str(node_root(cluster, name) / "jobs" / job_id / "1")


CODE_MAIN = """
import os, pathlib
print("code", os.environ["GPUPOOL_NODE_NAME"], os.getcwd(),
      pathlib.Path("data/input.txt").read_text().strip(), flush=True)
pathlib.Path("out").mkdir()
pathlib.Path("out/result.txt").write_text("made on " + os.environ["GPUPOOL_NODE_NAME"])
"""


def test_code_from_the_client_reaches_a_ray_node_with_no_shared_path(
    server: Server, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """`--code`: the archive travels to the node in the launch call; the node unpacks it in
    its own job dir (the client's folder is gone by then: nothing is read from it). Its
    declared artifacts come back from the node when it ends."""
    from gpupool.sdk import Client

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "main.py").write_text(CODE_MAIN)
    (project / "data" / "input.txt").write_text("shipped to the node\n")
    with Client(server.url, server.token) as sdk:
        digest = sdk.upload_code(project).digest
    shutil.rmtree(project)
    with server.client() as c:
        job_id = submit(c, command=[PY, "main.py"], code=digest, gpus=1, artifacts=["out/"])
        view = final(c, job_id)
        assert view["phase"] == "succeeded", (log_text(c, job_id), view["events"])
        line = next(x for x in log_text(c, job_id).splitlines() if x.startswith("code "))
        kept = wait_for(lambda: (a := c.get(f"/jobs/{job_id}/artifacts").json()) and
                        a[0]["status"] != "collecting" and a[0], timeout=60)
        assert kept["status"] == "kept", kept
        archive = c.get(f"/jobs/{job_id}/artifacts/1").content
    _, node, cwd, text = line.split(" ", 3)
    assert node == view["placement"]["node"] and text == "shipped to the node"
    assert cwd == str(node_root(cluster, node) / "jobs" / job_id / "1" / "code")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as t:
        made = t.extractfile("out/result.txt")
        assert made is not None and made.read().decode() == f"made on {node}"


SHARE_PROBE = (
    "import os; limit = os.environ['GPUPOOL_SHARE_LIMIT_FILE']; "
    "print('share', os.environ['LD_PRELOAD'], os.environ['GPUPOOL_SHARE_FILE'], limit, "
    "int(open(limit).read()) >> 20, flush=True)"
)


def test_a_gpu_share_on_a_ray_node_is_enforced_by_that_nodes_interposer(
    server: Server, cluster: LoopbackCluster
) -> None:
    with server.client() as c:
        job_id = submit(c, command=[PY, "-c", SHARE_PROBE], gpus=0.5, name="half")
        view = final(c, job_id)
        assert view["phase"] == "succeeded", (view["events"], log_text(c, job_id))
        nodes = {n["name"]: n for n in c.get("/nodes").json()}
    assert view["enforcement"] == "interposer"
    assert nodes[view["placement"]["node"]]["mechanisms"] == ["interposer"]
    line = next(x for x in log_text_of(server, job_id) if x.startswith("share "))
    _, library, share_file, limit_file, limit_mib = line.split()
    root = node_root(cluster, view["placement"]["node"])
    # The node's own library, published in its agent's directory for every account; the
    # share files in that directory too: the ledger is the job's, the limit is not.
    assert library == str(root / "lib" / "libgpushare.so"), library
    shares = root / "shares" / job_id / "1"
    assert (share_file, limit_file) == (str(shares / "gpushare"), str(shares / "limit"))
    assert int(limit_mib) == 40960  # half of an 80 GiB A100
    wait_for(lambda: not shares.exists(), timeout=10)  # released with the job


def log_text_of(server: Server, job_id: str) -> list[str]:
    with server.client() as c:
        return log_text(c, job_id).splitlines()


def test_two_node_gang_gets_consistent_env_and_all_reduces_over_gloo(server: Server) -> None:
    pytest.importorskip("torch", reason="torch (CPU) is needed for the all-reduce")
    if not VENV_FOR_JOBS:
        pytest.skip(NEEDS_VENV)
    with server.client() as c:
        job_id = submit(c, command=[PY, "-c", ALL_REDUCE], gpus=2, nodes=2,
                        procs_per_node=2, name="allreduce")
        view = final(c, job_id, timeout=180)
        text = log_text(c, job_id)
        assert view["phase"] == "succeeded", (view, text)
    ranks = view["placement"]["ranks"]
    assert len(ranks) == 2 and ranks[0]["node"] != ranks[1]["node"]
    # Topology: both nodes from rack r1 (the rack that holds the whole gang).
    assert {r["node"] for r in ranks} == {"n1", "n2"}
    lines = [dict(kv.split("=", 1) for kv in x.split()[1:])
             for x in text.splitlines() if x.startswith("allreduce ")]
    assert sorted(int(x["RANK"]) for x in lines) == [0, 1, 2, 3]
    for x in lines:
        rank = int(x["RANK"])
        node_rank = rank // 2
        assert x["sum"] == "10"  # 1 + 2 + 3 + 4 over the four workers
        assert (x["rank"], x["world"], x["WORLD_SIZE"]) == (str(rank), "4", "4")
        assert x["LOCAL_RANK"] == str(rank % 2) and x["LOCAL_WORLD_SIZE"] == "2"
        assert x["NODE_RANK"] == str(node_rank)
        assert x["GPUPOOL_NODE_NAME"] == ranks[node_rank]["node"]
        assert x["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, ranks[node_rank]["gpus"]))
    assert len({(x["MASTER_ADDR"], x["MASTER_PORT"]) for x in lines}) == 1
    assert lines[0]["MASTER_ADDR"] == "127.0.0.1"


def test_one_node_with_two_processes_gets_the_same_env_and_all_reduces(
        server: Server) -> None:
    """--procs-per-node on a single-node job: two ranks on one Ray node (issue 15, item 3)."""
    pytest.importorskip("torch", reason="torch (CPU) is needed for the all-reduce")
    if not VENV_FOR_JOBS:
        pytest.skip(NEEDS_VENV)
    with server.client() as c:
        job_id = submit(c, command=[PY, "-c", ALL_REDUCE], gpus=2, procs_per_node=2,
                        name="onenode")
        view = final(c, job_id, timeout=180)
        text = log_text(c, job_id)
        assert view["phase"] == "succeeded", (view, text)
    lines = [dict(kv.split("=", 1) for kv in x.split()[1:])
             for x in text.splitlines() if x.startswith("allreduce ")]
    assert sorted(int(x["RANK"]) for x in lines) == [0, 1]
    for x in lines:
        assert x["sum"] == "3" and x["WORLD_SIZE"] == "2" and x["NODE_RANK"] == "0"
        assert x["LOCAL_RANK"] == x["RANK"] and x["LOCAL_WORLD_SIZE"] == "2"
        assert x["GPUPOOL_NODE_NAME"] == view["placement"]["node"]
    assert len({(x["MASTER_ADDR"], x["MASTER_PORT"]) for x in lines}) == 1


def gpupool(server: Server, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args], env=server.env,
                          capture_output=True, text=True, timeout=timeout)


def test_torchrun_launcher_per_node_from_the_cli_and_describe_shows_ranks(
    server: Server, shared: Path
) -> None:
    """`gpupool run --nodes 2 --gpus-per-node 1 -- torchrun script`: one torchrun per node,
    configured by the PET_* variables alone, starts one worker per GPU; they all-reduce."""
    pytest.importorskip("torch", reason="torch (CPU) is needed for torchrun")
    if not VENV_FOR_JOBS:
        pytest.skip(NEEDS_VENV)
    script = shared / "allreduce.py"
    script.write_text(ALL_REDUCE)
    script.chmod(0o644)
    done = gpupool(server, "run", "--nodes", "2", "--gpus-per-node", "1", "--name", "trun",
                   "--workdir", str(shared), "--wait", "--json", "--", PY, "-m",
                   "torch.distributed.run", str(script))
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = json.loads(done.stdout)["id"]
    with server.client() as c:
        text = log_text(c, job_id)
        view = job(c, job_id)
    lines = [x for x in text.splitlines() if x.startswith("allreduce ")]
    assert len(lines) == 2 and all("sum=3" in x and "world=2" in x for x in lines), text
    described = gpupool(server, "describe", job_id, timeout=60).stdout
    ranks = view["placement"]["ranks"]
    assert f"node rank 0: {ranks[0]['node']}" in described
    assert f"node rank 1: {ranks[1]['node']}" in described
    assert "2 nodes × 1 process(es)" in described


def test_yaml_gang_and_bad_gang_specs(server: Server, tmp_path: Path, shared: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("command: [python, -c, 'pass']\nnodes: 2\ngpus_per_node: 0.5\n")
    bad = gpupool(server, "submit", str(spec), timeout=60)
    assert bad.returncode == 2 and "whole GPUs" in bad.stderr, bad.stderr
    spec.write_text("command: [python, -c, 'pass']\nnodes: 3\ngpus_per_node: 2\n"
                    f"name: wide\nworkdir: {shared}\n")
    done = gpupool(server, "submit", str(spec), "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["id"]
    with server.client() as c:
        # Three 2-GPU workers fit (n1, n2, n3), one per node, across both racks.
        view = final(c, job_id)
    assert view["phase"] == "succeeded", view
    assert sorted(r["node"] for r in view["placement"]["ranks"]) == ["n1", "n2", "n3"]


def test_cancel_stops_the_process_on_its_node_with_sigterm_first(server: Server) -> None:
    script = ("import signal, sys, time\n"
              "def bye(*_):\n"
              "    print('got SIGTERM', flush=True); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye)\n"
              "print('ready', flush=True)\n"
              "time.sleep(600)\n")
    with server.client() as c:
        job_id = submit(c, command=[PY, "-u", "-c", script], gpus=1,
                        grace_period_s=20, name="polite")
        wait_for(lambda: "ready" in log_text(c, job_id), timeout=60)
        assert c.post(f"/jobs/{job_id}/cancel").status_code == 200
        view = final(c, job_id, timeout=30)
        assert view["phase"] == "cancelled", view
        assert "got SIGTERM" in log_text(c, job_id)
        assert not any("SIGKILL" in e["message"] for e in view["events"])


def test_server_restart_readopts_processes_on_ray_nodes(server: Server, shared: Path) -> None:
    gate = shared / "gate"  # in the job's workdir: the only part of /tmp its sandbox shows
    script = ("import pathlib, time\n"
              "print('before', flush=True)\n"
              f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.1)\n"
              "print('after', flush=True)\n")
    with server.client() as c:
        job_id = submit(c, command=[PY, "-c", script], gpus=1, name="adopted",
                        workdir=str(shared))
        wait_for(lambda: "before" in log_text(c, job_id), timeout=60)
    server.kill9()
    server.start()
    gate.write_text("open")
    with server.client() as c:
        view = final(c, job_id, timeout=60)
        assert view["phase"] == "succeeded", view
        assert view["attempts"] == 1
        assert any("re-adopted" in e["message"] for e in view["events"]), view["events"]
        lines = log_text(c, job_id).splitlines()
    assert lines.count("before") == 1 and lines.count("after") == 1, lines


def test_a_node_that_joins_shows_up_and_takes_jobs(
    server: Server, cluster: LoopbackCluster
) -> None:
    cluster.add_node("n4", "1xT4-16GB", "rack=r2")
    with server.client() as c:
        # how soon it shows is not asserted: timings belong in bench/, not in tests
        nodes = wait_for(lambda: {n["name"]: n for n in c.get("/nodes").json()}.get("n4"),
                         timeout=90)
        assert [g["model"] for g in nodes["gpus"]] == ["T4"], nodes
        job_id = submit(c, command=[PY, "-c", ENV_PROBE], gpus=1, gpu_model="T4")
        view = final(c, job_id)
    assert view["phase"] == "succeeded" and view["placement"]["node"] == "n4", view


ISOLATION_PROBE = """
import os, subprocess, time
print("id-u", subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip(),
      flush=True)
print("env", " ".join(sorted(os.environ)), flush=True)
time.sleep(1)  # the agent writes handle.json just after starting the process
run_dir = os.environ["GPUPOOL_RUN_DIR"]
for name in ("launch.json", "handle.json"):
    try:
        open(os.path.join(run_dir, name)).read()
        print("read", name, flush=True)
    except OSError as exc:
        print("cannot-read", name, exc.strerror.replace(" ", "-"), flush=True)
"""


def test_a_job_on_a_ray_node_runs_as_its_owner_sandboxed_with_a_clean_environment(
    server: Server, cluster: LoopbackCluster
) -> None:
    if not accounts.isolating():
        pytest.skip("jobs run as the tests' own account unless the tests run as root")
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed: Ray nodes cannot sandbox jobs")
    with server.client() as c:
        job_id = submit(c, command=[PY, "-c", ISOLATION_PROBE], gpus=1, name="isolated")
        view = final(c, job_id)
        lines = log_text(c, job_id).splitlines()
    assert view["phase"] == "succeeded", (view, lines)
    # Run as the owner's account (the admin's, created by the server), in bwrap.
    assert view["isolation"].startswith(f"bwrap as {accounts.prefix()}"), view["isolation"]
    account = view["isolation"].removeprefix("bwrap as ")
    uid = int(next(x for x in lines if x.startswith("id-u ")).split()[1])
    assert uid != 0 and uid == pwd.getpwnam(account).pw_uid, (uid, account)
    described = gpupool(server, "describe", job_id, timeout=60).stdout
    assert "isolation" in described and f"bwrap as {account}" in described, described
    # Nothing of the server's environment, nor of the node's (its ray start's).
    env = set(next(x for x in lines if x.startswith("env ")).split()[1:])
    leaked = {SERVER_MARKER, "GPUPOOL_HOME", "GPUPOOL_URL", "GPUPOOL_TOKEN",
              "GPUPOOL_WORK_DIR", "GPUPOOL_AGENT_DIR", "GPUPOOL_FAKE_GPUS",
              "GPUPOOL_NODE_LABELS"} & env
    assert not leaked and not [k for k in env if k.startswith("RAY_")], env
    assert {"GPUPOOL_JOB_ID", "GPUPOOL_JOB_DIR", "CUDA_VISIBLE_DEVICES", "PATH"} <= env, env
    # The agent's control files exist on the node, and the job could read neither.
    root = node_root(cluster, view["placement"]["node"])
    run_dir = root / "runs" / job_id / "1"
    assert (run_dir / "launch.json").is_file() and (run_dir / "handle.json").is_file()
    assert not any(x.startswith("read ") for x in lines), lines
    assert sum(x.startswith("cannot-read ") for x in lines) == 2, lines
    # Its job dir on the node is its account's own.
    st = (root / "jobs" / job_id / "1").stat()
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o700)


def _attempt_pids(run_dir: Path) -> list[int]:
    """The running processes of the attempt whose run dir (on its node) is ``run_dir``."""
    marker = f"GPUPOOL_RUN_DIR={run_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _running(int(entry.name)):
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_losing_a_node_requeues_its_job_which_completes_elsewhere(
    server: Server, cluster: LoopbackCluster
) -> None:
    script = (
        "import os, time\n"
        "if os.environ['GPUPOOL_ATTEMPT'] == '1':\n"
        "    print('first attempt on', os.environ['GPUPOOL_NODE_NAME'], flush=True)\n"
        "    time.sleep(600)\n"
        "print('done on', os.environ.get('GPUPOOL_NODE_NAME'), flush=True)\n"
    )
    with server.client() as c:
        job_id = submit(c, command=[PY, "-c", script], gpus=2, restart="on-failure",
                        max_retries=2, name="survivor")
        wait_for(lambda: "first attempt on" in log_text(c, job_id), timeout=60)
        first = job(c, job_id)["placement"]["node"]
        assert f"first attempt on {first}" in log_text(c, job_id)
        run_dir = node_root(cluster, first) / "runs" / job_id / "1"
        assert _attempt_pids(run_dir), f"no process carries GPUPOOL_RUN_DIR={run_dir}"
        killed_at = cluster.kill_node(first)
        view = final(c, job_id, timeout=120)
        assert view["phase"] == "succeeded", (view["reason"], view["events"])
        assert view["attempts"] == 2
        assert view["placement"]["node"] not in (first, "head")
        messages = [e["message"] for e in view["events"]]
        lost = next(e for e in view["events"] if "lost" in e["message"])
        assert f"node {first} lost" in lost["message"] and "retry 1 of 2" in lost["message"], \
            messages
        noticed = _seconds(lost["at"]) - killed_at
        assert noticed < 30, f"node loss acted on after {noticed:.1f} s"
        nodes = {n["name"] for n in c.get("/nodes").json()}
        assert first not in nodes
    # Nothing the lost node ran lives on (its processes die with their agent).
    wait_for(lambda: not _attempt_pids(run_dir), timeout=15)


def _running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()



def test_up_with_a_local_ray_head(tmp_path: Path) -> None:
    """`gpupool up --ray local --fake-gpus ...`: a one-node Ray head on 127.0.0.1 that the
    server starts and stops itself; its fake GPUs come from --fake-gpus."""
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="gpl", dir="/tmp"))  # short: Ray's socket paths
    agents = job_reachable_dir("gpa")  # jobs run as other accounts: they must reach it
    s = Server(home, "", "1xA100-80GB", extra_args=("--ray", "local"),
               extra_env={**private_home(tmp_path), "RAY_TMPDIR": str(ray_tmp),
                          "GPUPOOL_AGENT_DIR": str(agents)}, isolated=True)
    s.start()
    try:
        with s.client() as c:
            nodes = c.get("/nodes").json()
            assert len(nodes) == 1 and [g["model"] for g in nodes[0]["gpus"]] == ["A100"]
            job_id = submit(c, command=[PY, "-c", ENV_PROBE], gpus=0.5)
            view = final(c, job_id)
        assert view["phase"] == "succeeded", view
        assert view["enforcement"] == "interposer", view["enforcement"]
    finally:
        s.stop()
        s.wait_exited()  # its Ray head goes down as the server's process exits
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(agents, ignore_errors=True)


def test_a_notebook_on_a_ray_node_is_reached_through_the_gateway(server: Server) -> None:
    """JupyterLab starts on the Ray node the scheduler chose (as its owner, sandboxed) and
    the gateway reaches it there; its kernel runs code."""
    pytest.importorskip("jupyterlab", reason="the notebook extra is not installed")
    from notebook_client import base_of, run_code
    from notebook_client import wait_for as wait_until

    with server.client() as c:
        nb = submit(c, kind="notebook", name="ray-lab", gpus=0.5)
        view = wait_until(c, nb, "ready")
        assert view["placement"]["node"] in WORKERS
        base = base_of(view["url"])
        assert run_code(base, server.token, "1+1") == "2"
        assert c.post(f"/jobs/{nb}/cancel").status_code == 200
        assert final(c, nb)["phase"] == "cancelled"


WRITE_MODEL = """
import os, pathlib
out = pathlib.Path(os.environ["GPUPOOL_OUTPUTS"])
(out / "files" / "model").write_text("weights from " + os.environ["GPUPOOL_NODE_NAME"])
(out / "loss").write_text("0.25")
print("wrote", out, flush=True)
"""

READ_MODEL = """
import os, pathlib, sys
print("read", os.environ["GPUPOOL_NODE_NAME"], pathlib.Path(sys.argv[1]).read_text(),
      os.path.exists(sys.argv[2]), flush=True)
"""


def test_a_pipeline_step_file_reaches_a_later_step_on_another_node(
    server: Server, cluster: LoopbackCluster
) -> None:
    """Job steps on Ray nodes share no path with the server or with each other (each agent
    has its own runs dir; the sandbox hides the server's): step a's file output comes back
    from its node, and step b, placed on another node (another GPU model), gets it shipped
    with its inputs."""
    with server.client() as c:
        if not any(g["model"] == "T4" for n in c.get("/nodes").json() for g in n["gpus"]):
            cluster.add_node("n5", "1xT4-16GB", "rack=r2")
            wait_for(lambda: any(g["model"] == "T4" for n in c.get("/nodes").json()
                                 for g in n["gpus"]), timeout=90)
        work = str(server.work_dir)
        definition = {"name": "across-nodes", "steps": [
            {"name": "a", "kind": "job", "command": [PY, "-c", WRITE_MODEL],
             "resources": {"gpus": 1, "gpu_model": "A100"}, "outputs": ["loss"],
             "files": ["model"]},
            {"name": "b", "kind": "job", "depends_on": ["a"],
             "command": [PY, "-c", READ_MODEL, "${{ steps.a.files.model }}", work],
             "resources": {"gpus": 1, "gpu_model": "T4"}}]}
        made = c.post("/pipeline-runs", json={"definition": definition})
        assert made.status_code == 201, made.text
        run = str(made.json()["id"])
        view = wait_for(lambda: (v := c.get(f"/pipeline-runs/{run}").json())["state"] in
                        ("succeeded", "failed", "cancelled") and v, timeout=180)
        steps = {s["name"]: s for s in view["steps"]}
        assert view["state"] == "succeeded", steps
        assert steps["a"]["outputs"] == {"loss": "0.25"}
        node_a = c.get(f"/jobs/{steps['a']['job_id']}").json()["placement"]["node"]
        job_b = c.get(f"/jobs/{steps['b']['job_id']}").json()
        line = next(x for x in log_text(c, str(job_b["id"])).splitlines()
                    if x.startswith("read "))
    # b's input travelled as its code (the command names the shipped copy, not the server's)
    assert str(job_b["spec"]["code"]).startswith("sha256:")
    assert job_b["spec"]["command"][3] == "inputs/a/model"
    assert job_b["spec"]["artifacts"] == ["outputs/"]
    words = line.split(" ")  # read NODE CONTENT... VISIBLE
    node_b, content, server_visible = words[1], " ".join(words[2:-1]), words[-1]
    assert node_b == job_b["placement"]["node"] and node_b != node_a
    assert content == f"weights from {node_a}"
    assert server_visible == "False"  # the server's work dir is not on the node's side
