"""NVML figures end to end: a real ``gpupool up`` (root, jobs sandboxed in bubblewrap as
their teams' Unix accounts) loads a stand-in ``libnvidia-ml.so.1`` built here
(tests/nvml_standin/, its structs laid out as the pinned nvidia-ml-py reads them), so its
GPUs are "real" (inventory source nvml) and the GPU watch samples them every 0.3 s.

The test writes what the stand-in reports (cards' utilisation and memory; processes by host
pid with their memory and SM share) and checks that it follows: the per-GPU series of
``/metrics`` (parsed with prometheus-client's parser), a running job's own series (its
process found by a marker in its command line under /proc: the sandbox gives it a pid
namespace, NVML speaks host pids) with its team, the idle flag after the (2 s) idle window in
``/metrics``, the API, ``gpupool ps``, ``describe`` and the console's job page (headless
Chromium, when installed), and its clearing when the job gets busy again, and
``gpupool usage --json`` giving the job's measured ``gpu_seconds_used``. A process of no
job on the same card is never counted as the job's.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpupool.interposer import sharefile
from nvml_standin.build import Card, Proc, StandinState, build_standin
from server_harness import Server, kill_leftover_jobs, remove_created_accounts, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as team accounts: needs root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.skipif(shutil.which("gcc") is None and not os.environ.get("CC"),
                       reason="the NVML stand-in needs a C compiler"),
]

MIB = 1 << 20
CHROMIUM = "/usr/bin/chromium"
IDLE_AFTER_S = 2


class Pool:
    """The running server, the stand-in's state and the lib's folder."""

    def __init__(self, server: Server, state: StandinState, lib: Path) -> None:
        self.server, self.state, self.lib = server, state, lib
        self.api = httpx.Client(base_url=f"{server.url}/api/v1", timeout=30, trust_env=False,
                                headers={"Authorization": f"Bearer {server.token}"})

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        answer = httpx.get(f"{self.server.url}/metrics", timeout=30, trust_env=False,
                           headers={"Authorization": f"Bearer {self.server.token}"})
        assert answer.status_code == 200, answer.text
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(answer.text)
                for s in family.samples}

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, frozenset(labels.items())))

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args,
                               "--url", self.server.url, "--token", self.server.token],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    root = tmp_path_factory.mktemp("nvml")
    lib = build_standin(root / "lib")
    state = StandinState(root / "state.txt", [Card(used_mib=2048, util=37), Card()])
    state.write()
    server = Server(root / "home", "", "", isolated=True,
                    extra_env={**state.env(lib), "GPUPOOL_SHARING": "interposer"},
                    extra_args=("--gpu-sample-interval", "0.3",
                                "--gpu-idle-after", f"{IDLE_AFTER_S}s"))
    server.home.mkdir(parents=True)
    server.start()
    made = Pool(server, state, lib)
    try:
        yield made
    finally:
        made.api.close()
        server.stop()
        kill_leftover_jobs(server.home)
        remove_created_accounts(server)
        shutil.rmtree(server.work_dir, ignore_errors=True)


def test_the_standin_is_laid_out_as_pynvml_reads_it(pool: Pool) -> None:
    """Struct sizes equal pynvml's ctypes ones, and pynvml reads back the state file."""
    probe = (
        "import ctypes, json, pynvml as n\n"
        "n.nvmlInit()\n"
        "sizes = [ctypes.c_uint() for _ in range(5)]\n"
        "n.nvmlLib.standin_struct_sizes(*[ctypes.byref(x) for x in sizes])\n"
        "h = n.nvmlDeviceGetHandleByIndex(0)\n"
        "print(json.dumps({'sizes': [x.value for x in sizes],\n"
        "  'name': n.nvmlDeviceGetName(h), 'util': n.nvmlDeviceGetUtilizationRates(h).gpu,\n"
        "  'used': n.nvmlDeviceGetMemoryInfo(h).used, 'count': n.nvmlDeviceGetCount()}))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, **pool.state.env(pool.lib)}, timeout=60,
                          check=True)
    got = json.loads(done.stdout)
    import pynvml

    assert got["sizes"] == [ctypes.sizeof(t) for t in (
        pynvml.c_nvmlMemory_t, pynvml.c_nvmlMemory_v2_t, pynvml.c_nvmlUtilization_t,
        pynvml.c_nvmlProcessInfo_v3_t, pynvml.c_nvmlProcessUtilizationSample_t)]
    assert got == {**got, "name": "NVIDIA H200", "util": 37, "used": 2048 * MIB, "count": 2}


def test_the_sampler_reads_cards_processes_and_what_nvml_cannot_tell(
        pool: Pool, tmp_path: Path) -> None:
    """``NvmlSampler.read`` through pynvml and the stand-in: per-process memory ("not
    available": None) and SM share; a busy card without per-process samples, and one that
    does not support them, have unknown process utilisation; an idle one has none busy."""
    state = StandinState(tmp_path / "state.txt", [
        Card(util=37, used_mib=3000), Card(util=50), Card(util=0),
        Card(util=20, procutil=False)],
        [Proc(4242, 0, 1234, 55), Proc(4243, 0, None, 3), Proc(4244, 3, 10, 0)])
    state.write()
    probe = ("import dataclasses, json\n"
             "from gpupool.executors.nvml_sampler import NvmlSampler\n"
             "print(json.dumps(dataclasses.asdict(NvmlSampler().read())))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, **state.env(pool.lib)}, timeout=60, check=True)
    got = json.loads(done.stdout)
    total = 143771 * MIB
    assert got["cards"] == [
        {"index": 0, "utilization": 0.37, "memory_used_bytes": 3000 * MIB,
         "memory_total_bytes": total, "process_util": True},
        {"index": 1, "utilization": 0.5, "memory_used_bytes": 0, "memory_total_bytes": total,
         "process_util": False},
        {"index": 2, "utilization": 0.0, "memory_used_bytes": 0, "memory_total_bytes": total,
         "process_util": True},
        {"index": 3, "utilization": 0.2, "memory_used_bytes": 0, "memory_total_bytes": total,
         "process_util": False}]
    assert got["processes"] == [
        {"pid": 4242, "card": 0, "memory_bytes": 1234 * MIB, "sm": 0.55},
        {"pid": 4243, "card": 0, "memory_bytes": None, "sm": 0.03},
        {"pid": 4244, "card": 3, "memory_bytes": 10 * MIB, "sm": None}]


def test_gpu_series_follow_what_nvml_says(pool: Pool) -> None:
    nodes = pool.api.get("/nodes").json()
    assert [n["source"] for n in nodes] == ["nvml"]
    node = nodes[0]["name"]
    assert [g["model"] for g in nodes[0]["gpus"]] == ["H200", "H200"]
    wait_for(lambda: pool.value("gpupool_gpu_utilization_ratio", node=node, gpu="0") == 0.37)
    assert pool.value("gpupool_gpu_memory_used_bytes", node=node, gpu="0") == 2048 * MIB
    assert pool.value("gpupool_gpu_utilization_ratio", node=node, gpu="1") == 0
    pool.state.cards[1].util, pool.state.cards[1].used_mib = 81, 512
    pool.state.write()
    wait_for(lambda: pool.value("gpupool_gpu_utilization_ratio", node=node, gpu="1") == 0.81)
    assert pool.value("gpupool_gpu_memory_used_bytes", node=node, gpu="1") == 512 * MIB
    # the heat map's rows: this 5-minute bucket's mean utilisation, between what was and is
    heat = pool.api.get("/usage/gpus").json()
    assert heat["measured"] and heat["bucket_s"] == 300 and len(heat["buckets"]) == 72
    rows = {(r["node"], r["gpu"]): r["utilization"] for r in heat["gpus"]}
    assert rows[(node, 0)][-1] == pytest.approx(0.37)
    assert 0 < rows[(node, 1)][-1] <= 0.81 and rows[(node, 1)][0] is None


def host_pid(marker: str) -> int | None:
    """The host pid of the process whose command line holds ``marker`` (the job's shell)."""
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            args = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[:2] == [b"sh", b"-c"] and any(marker.encode() in a for a in args):
            return int(name)
    return None


def console_shows(pool: Pool, job: str, texts: list[str]) -> None:
    """The console's page of ``job`` (headless Chromium, when installed) shows ``texts`` in
    its GPU card."""
    if not Path(CHROMIUM).exists():
        return
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(pool.server.url + "/")
            page.get_by_label("API token").fill(pool.server.token)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_test_id("whoami").wait_for()
            page.goto(f"{pool.server.url}/#/jobs/{job}")
            card = page.get_by_test_id("job-gpu")
            for text in texts:
                sync_api.expect(card).to_contain_text(text, timeout=20_000)
        finally:
            browser.close()


def write_ledger(path: Path, host_pid: int, mib: int) -> None:
    """Put a record of ``mib`` MiB on device 0 for the process in the job's share file, as
    the interposer would: under the pid it has in its sandbox, with its start time."""
    inner = next(int(line.split()[-1]) for line in
                 Path(f"/proc/{host_pid}/status").read_text().splitlines()
                 if line.startswith("NSpid:"))
    stat = Path(f"/proc/{host_pid}/stat").read_bytes()
    start = int(stat[stat.rindex(b")") + 2:].split()[19])
    assert inner != host_pid  # it runs in a pid namespace of its own
    data = bytearray(path.read_bytes())
    record = sharefile._RECORD.pack(inner, 0, start, mib * MIB,
                                    *[0] * (sharefile.MAX_DEVS - 1))
    data[sharefile.HEADER_SIZE:sharefile.HEADER_SIZE + len(record)] = record
    path.write_bytes(bytes(data))


def usage_of(pool: Pool, job_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = pool.api.get(f"/jobs/{job_id}").json()["gpu_usage"]
    return found


def test_a_jobs_processes_are_its_figures_and_its_idle_flag(pool: Pool) -> None:
    admin = pool.api
    assert admin.post("/teams", json={"name": "vision", "quota_gpus": 2}).status_code == 201
    made = admin.post("/users", json={"name": "ines", "team": "vision"})
    assert made.status_code == 201, made.text
    token = admin.post("/tokens", json={"user": "ines"}).json()["token"]
    marker = f"nvml-marker-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=f"{pool.server.url}/api/v1", timeout=30, trust_env=False,
                      headers={"Authorization": f"Bearer {token}"}) as ines:
        submitted = ines.post("/jobs", json={
            "command": ["sh", "-c", f"sleep 300; echo {marker}"], "gpus": 0.5})
        assert submitted.status_code == 201, submitted.text
    job = submitted.json()["id"]
    wait_for(lambda: admin.get(f"/jobs/{job}").json()["phase"] == "running")
    view = admin.get(f"/jobs/{job}").json()
    assert view["isolation"].startswith("bwrap")
    card = view["placement"]["gpus"][0]
    pid = wait_for(lambda: host_pid(marker))
    # the job's shell on its card, busy 20 % of the SMs (0.4 of its half card), and a
    # process of no job (this test's own pid) beside it, which must never count as the job's
    pool.state.procs = [Proc(pid, card, 1234, 20), Proc(os.getpid(), card, 999, 70)]
    pool.state.write()
    labels = {"job": job, "team": "vision"}
    wait_for(lambda: pool.value("gpupool_job_gpu_utilization_ratio", **labels) == 0.4)
    assert pool.value("gpupool_job_gpu_memory_used_bytes", **labels) == 1234 * MIB
    assert pool.value("gpupool_job_gpu_idle", **labels) == 0

    # idle: under 5 % of its allocation (1 % of the card is 0.02 of half a card)
    pool.state.procs[0].sm = 1
    pool.state.write()
    wait_for(lambda: pool.value("gpupool_job_gpu_idle", **labels) == 1,
             timeout=IDLE_AFTER_S + 20)
    usage = usage_of(pool, job)
    assert usage is not None and usage["idle_since"] is not None
    assert "GPU idle" in next(line for line in pool.cli("ps").splitlines()
                               if line.lstrip().startswith(job + " "))
    described = pool.cli("describe", job)
    assert "GPU idle" in described and "under 5 % utilisation since" in described
    # the Usage page's sources: the idle holder for its team and admins, not for others
    heat = admin.get("/usage/gpus").json()
    assert heat["measured"] and {"job": job, "team": "vision"} in heat["idle"]
    with httpx.Client(base_url=f"{pool.server.url}/api/v1", timeout=30, trust_env=False,
                      headers={"Authorization": f"Bearer {token}"}) as ines:
        assert {"job": job, "team": "vision"} in ines.get("/usage/gpus").json()["idle"]
    assert admin.post("/teams", json={"name": "audio", "quota_gpus": 0}).status_code == 201
    assert admin.post("/users", json={"name": "omar", "team": "audio"}).status_code == 201
    other = admin.post("/tokens", json={"user": "omar"}).json()["token"]
    with httpx.Client(base_url=f"{pool.server.url}/api/v1", timeout=30, trust_env=False,
                      headers={"Authorization": f"Bearer {other}"}) as omar:
        assert omar.get("/usage/gpus").json()["idle"] == []
    assert "peak 1.21GiB on one GPU of its" in described  # 1234 MiB against its limit
    assert view["gpu_memory_limit_mib"] is not None
    console_shows(pool, job, ["Idle GPUs:", "Peak memory (one GPU)", "1.2 GiB of its",
                              "GPU-hours"])

    # busy again: the flag goes
    pool.state.procs[0].sm = 50
    pool.state.write()
    wait_for(lambda: pool.value("gpupool_job_gpu_idle", **labels) == 0)
    wait_for(lambda: (usage_of(pool, job) or {}).get("idle_since", 1) is None)
    assert "GPU idle" not in pool.cli("describe", job)
    usage = usage_of(pool, job)
    assert usage is not None
    assert usage["peak_utilization"] == 1.0  # 50 % of the card is all of its half card
    assert usage["peak_memory_mib"] == 1234
    assert 0 < usage["mean_utilization"] < 1
    assert 0 < usage["gpu_seconds_used"] < usage["gpu_seconds"]

    # NVML cannot tell the process's memory: the interposer's ledger of the job's live
    # processes tells it (the shell's record, by its pid inside the sandbox)
    write_ledger(pool.server.work_dir / "shares" / job / "1" / "gpushare", pid, 777)
    pool.state.procs[0].used_mib = None
    pool.state.write()
    wait_for(lambda: pool.value("gpupool_job_gpu_memory_used_bytes", **labels) == 777 * MIB)

    # accounting: the job's measured GPU-seconds are on its usage record
    assert admin.post(f"/jobs/{job}/cancel").status_code == 200
    wait_for(lambda: admin.get(f"/jobs/{job}").json()["phase"] == "cancelled")
    rows = json.loads(pool.cli("usage", "--by", "job", "--json"))
    row = next(r for r in rows if r["key"] == job)
    assert row["gpu_seconds_used"] is not None and 0 < row["gpu_seconds_used"] <= row[
        "gpu_seconds"]
    final = usage_of(pool, job)
    assert final is not None and final["idle_since"] is None
    assert abs(row["gpu_seconds_used"] - final["gpu_seconds_used"]) < 0.01
