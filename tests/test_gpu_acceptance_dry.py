"""The GPU acceptance run (bench/gpu_acceptance.py) without a GPU: its arguments, its runner
(a section per process, a time limit per section, a budget for the run, skip reasons, the
report files), a real dry run of the discovery, interposer and MPS sections against fake GPUs
(MPS through a stand-in control binary), and the verdicts of the sections that need a GPU,
fed with the shapes they read on one."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_acceptance
import gpu_check_discovery
import gpu_check_hooks
import gpu_check_mig
import gpu_check_mps
import gpu_check_overhead
import gpu_check_sharing
from gpu_check_common import Skip
from gpu_report import status_of
from gpu_sections import SECTIONS, Section
from gpupool.server.sharing.choose import mig_holds

FAKE = "1xH200-141GB"
NAMES = [s.name for s in SECTIONS]


# --- arguments -------------------------------------------------------------------------


def test_only_keeps_run_order_and_timeouts_override_one_section(tmp_path: Path) -> None:
    args = gpu_acceptance.parse(["--only", "mps", "discovery", "--fake-gpus", FAKE,
                                 "--out", str(tmp_path), "--timeout", "mps=7"])
    chosen = gpu_acceptance.plan(args)
    assert [s.name for s in chosen] == ["discovery", "mps"]
    assert [s.timeout_s for s in chosen] == [SECTIONS[0].timeout_s, 7.0]
    assert (args.fake_gpus, args.out) == (FAKE, tmp_path)
    defaults = gpu_acceptance.parse([])
    assert [s.name for s in gpu_acceptance.plan(defaults)] == NAMES
    assert defaults.fake_gpus == "" and defaults.out == gpu_acceptance.RESULTS


@pytest.mark.parametrize("argv", [["--only", "nosuch"], ["--timeout", "mps"],
                                  ["--timeout", "nosuch=5"], ["--timeout", "mps=0"],
                                  ["--timeout", "mps=soon"]])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        gpu_acceptance.parse(argv)
    assert exit_.value.code == 2


# --- the runner ------------------------------------------------------------------------

TEST_SECTIONS = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from gpu_check_common import Skip

    def sleepy(fake_gpus):
        Path(os.environ["MARKS"], "pid").write_text(str(os.getpid()))
        try:
            time.sleep(120)
        finally:  # SIGTERM ends the worker through SystemExit: clean-ups run
            Path(os.environ["MARKS"], "cleaned").write_text("yes")

    def cannot(fake_gpus):
        raise Skip("no widget on this machine")

    def some(fake_gpus):
        return {"checks": {"a": "held: 1 of 1", "b": "skipped: needs CUDA"}, "figure": 3,
                "markdown": "| extra | table |"}

    def broken(fake_gpus):
        raise RuntimeError("boom")
''')


def test_a_hung_section_is_timed_out_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gpu_test_sections.py").write_text(TEST_SECTIONS)
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("MARKS", str(marks))
    sections = [Section(name, f"the {name} one", "gpu_test_sections", name, timeout_s=t)
                for name, t in (("sleepy", 3), ("cannot", 60), ("some", 60),
                                ("broken", 60))]
    out = tmp_path / "out"
    records = gpu_acceptance.run_all(sections, "", out, budget_s=300,
                                     extra_path=[str(tmp_path)])
    got = {r["name"]: (r["status"], r["reason"]) for r in records}
    assert got["sleepy"] == ("timed out", "timed out after 3 s")
    assert got["cannot"] == ("skipped", "no widget on this machine")
    assert got["some"] == ("partial", "1 held, 1 skipped: needs CUDA")
    assert got["broken"][0] == "error" and "RuntimeError: boom" in got["broken"][1]
    assert (marks / "cleaned").read_text() == "yes"
    with pytest.raises(ProcessLookupError):  # the worker is gone, not left sleeping
        os.kill(int((marks / "pid").read_text()), 0)
    saved = json.loads((out / "gpu.json").read_text())
    assert [s["name"] for s in saved["sections"]] == ["sleepy", "cannot", "some", "broken"]
    assert saved["sections"][2]["found"] == {"figure": 3}
    report = (out / "gpu.md").read_text()
    assert "| sleepy | timed out |" in report and "| cannot | skipped |" in report
    assert "| extra | table |" in report and "RuntimeError: boom" in report


def test_sections_past_the_budget_are_skipped_and_every_section_is_named(
        tmp_path: Path) -> None:
    records = gpu_acceptance.run_all(SECTIONS, FAKE, tmp_path, budget_s=1)
    assert [r["status"] for r in records] == ["skipped"] * len(SECTIONS)
    assert all("budget of 1 s was spent" in r["reason"] for r in records)
    report = (tmp_path / "gpu.md").read_text()
    for section in SECTIONS:
        assert f"| {section.name} | skipped |" in report
        assert f"## {section.name}: {section.title}" in report
    assert json.loads((tmp_path / "gpu.json").read_text())["run"]["fake_gpus"] == FAKE


@pytest.mark.parametrize(("checks", "status"), [
    ({"a": "held", "b": "held: 2"}, "passed"),
    ({"a": "held", "b": "skipped: no CUDA"}, "partial"),
    ({"a": "held", "b": "failed: 3 MiB", "c": "skipped: x"}, "failed"),
    ({"a": "skipped: no CUDA", "b": "skipped: no MPS"}, "skipped"),
    ({}, "skipped"),
    ({"a": "held", "b": "something odd"}, "failed"),
])
def test_a_status_never_claims_more_than_its_checks(checks: dict[str, str],
                                                    status: str) -> None:
    assert status_of(checks)[0] == status
    if status == "skipped" and checks:
        assert "no CUDA" in status_of(checks)[1] and "no MPS" in status_of(checks)[1]


# --- real dry runs on fake GPUs ----------------------------------------------------------


def test_dry_run_of_discovery_and_interposer_against_real_servers(tmp_path: Path) -> None:
    code = gpu_acceptance.main(["--only", "discovery", "interposer", "--fake-gpus", FAKE,
                                "--out", str(tmp_path)])
    saved = {s["name"]: s for s in json.loads((tmp_path / "gpu.json").read_text())["sections"]}
    assert code == 0 and list(saved) == ["discovery", "interposer"]
    disc = saved["discovery"]["checks"]
    for check in ("gpupool nodes --json", "source", "GPU count", "model", "memory"):
        assert disc[check].startswith("held"), (check, disc[check])
    assert disc["model"] == "held: shown ['H200'], the declaration ['H200']"
    assert disc["memory"] == "held: shown [144384] MiB, the declaration [144384] MiB"
    assert disc["MIG mode"] == "skipped: fake GPUs have no MIG mode"
    inter = saved["interposer"]
    checks = inter["checks"]
    assert checks["placed with a 4 GiB limit"].startswith("held: limit 4096 MiB")
    assert checks["enforced by the interposer"] == "held: enforcement 'interposer'"
    assert checks["the job's processes get the limit"].endswith(
        "interposer: True, GPUPOOL_GPU_MEMORY_LIMIT_MIB=4096")
    assert checks["a whole card: no interposer"].startswith("held: enforcement 'whole GPU'")
    assert inter["found"]["limited"]["gpu_memory_limit_mib"] == 4096
    if inter["found"]["no_cuda"]:  # this machine: the checks made with torch say why not
        assert checks["sees 4 GiB total"] == f"skipped: {inter['found']['no_cuda']}"
        assert inter["status"] == "partial"
    report = (tmp_path / "gpu.md").read_text()
    assert "| discovery | partial |" in report and "## interposer:" in report


STANDIN_MPS = textwrap.dedent('''\
    #!{python}
    import os, signal, subprocess, sys
    from pathlib import Path
    pipe = Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"])
    pid_file = pipe / "nvidia-cuda-mps-control.pid"
    if sys.argv[1:] == ["-d"]:
        pipe.mkdir(parents=True, exist_ok=True)
        daemon = subprocess.Popen(["sleep", "300"], start_new_session=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        pid_file.write_text(f"{{daemon.pid}}\\n")
        Path(os.environ["STANDIN_CALLS"]).open("a").write(f"started {{daemon.pid}}\\n")
    elif "quit" in sys.stdin.read().split() and pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        Path(os.environ["STANDIN_CALLS"]).open("a").write(f"quit {{pid_file.read_text()}}")
        pid_file.unlink()
''')


def test_dry_run_of_mps_with_a_stand_in_daemon(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    control = tmp_path / "nvidia-cuda-mps-control"
    control.write_text(STANDIN_MPS.format(python=sys.executable))
    control.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("GPUPOOL_MPS_CONTROL", str(control))
    monkeypatch.setenv("STANDIN_CALLS", str(calls))
    records = gpu_acceptance.run_all(gpu_acceptance.by_name(["mps"]), FAKE, tmp_path / "out",
                                     budget_s=300)
    checks = records[0]["checks"]
    assert checks["both on one card"].startswith("held")
    assert checks["enforced by MPS"].startswith("held: enforcement ['mps")
    assert checks["MPS limits in the jobs' environment"].startswith("held")
    said = calls.read_text().split("\n")  # one daemon, started, then quit by the server
    started = [line.split()[1] for line in said if line.startswith("started")]
    assert len(started) == 1 and f"quit {started[0]}" in said


def test_without_a_daemon_or_real_gpus_mps_and_mig_are_skipped_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUPOOL_MPS_CONTROL", raising=False)
    with pytest.raises(Skip, match="fake GPUs: MPS needs the real daemon"):
        gpu_check_mps.run(FAKE)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Skip, match="nvidia-cuda-mps-control not on PATH"):
        gpu_check_mps.run("")
    with pytest.raises(Skip, match="fake GPUs have no MIG mode"):
        gpu_check_mig.run(FAKE)


def test_hooks_skip_a_module_not_written_yet_and_adopt_one_that_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_check_hooks, "BENCH", tmp_path)
    with pytest.raises(Skip, match=r"not written yet: bench/gpu_later.py \(issue 99\)"):
        gpu_check_hooks.external("gpu_later", 99, FAKE)
    (tmp_path / "gpu_later.py").write_text(
        "def run_section(fake_gpus):\n    return {'verdict': {'x': 'held'}, 'gpus': fake_gpus}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = gpu_check_hooks.external("gpu_later", 99, FAKE)
    assert found["checks"] == {"x": "held"} and found["gpus"] == FAKE


# --- verdicts of the sections that need a GPU, on the shapes they read there ------------


def test_discovery_compares_with_nvml_and_says_what_the_api_lacks() -> None:
    nodes = [{"source": "nvml", "mechanisms": ["interposer"],
              "gpus": [{"model": "H200", "memory_mib": 143771}] * 2}]
    nvml = [{"index": i, "name": "NVIDIA H200", "memory_mib": 143771, "mig": False,
             "nvlink_peers": [1 - i]} for i in (0, 1)]
    smi = [{"name": "NVIDIA H200", "memory.total": "143771"}] * 2
    checks = gpu_check_discovery.verdict("", nodes, None, nvml, None, smi, None)
    assert checks["model"].startswith("held") and checks["memory"].startswith("held")
    assert checks["MIG mode"].startswith("held: NVML: MIG off")
    assert checks["nvidia-smi agrees with NVML"].startswith("held")
    assert checks["NVLink peers"].startswith("failed: NVML sees NVLink peers {0: [1], 1: [0]}")
    nvml[1]["memory_mib"] = 81559
    assert gpu_check_discovery.verdict("", nodes, None, nvml, None, smi, None)[
        "memory"].startswith("failed")
    assert gpu_check_discovery.verdict("", [], "exit 1: refused", [], None, [], None) == {
        "gpupool nodes --json": "failed: exit 1: refused"}


def _ovh(ms: dict[str, float]) -> dict[str, Any]:
    runs = {label: [{"windows_ms": [ms[label] * 1.1, ms[label]],
                     "mem": {"total_mib": 32768}}] for label in ms}
    found = {"no_cuda": None, "sizes": "--model resnet50", "runs": runs}
    found["best_ms"] = {k: gpu_check_overhead.best(v) for k, v in runs.items()}
    return found


def test_overhead_holds_each_configuration_to_98_percent_of_bare() -> None:
    labels = [label for label, _, _ in gpu_check_overhead.CONFIGS]
    found = _ovh(dict(zip(labels, [100.0, 101.0, 103.0, 101.5, 190.0], strict=True)))
    checks = gpu_check_overhead.verdict(found)
    assert checks["interposer, no limit: ≥ 98 % of bare"] == "held: 99.0 % of bare"
    assert checks["interposer, 32 GiB limit: ≥ 98 % of bare"] == "failed: 97.1 % of bare"
    assert checks["the limit was in effect"] == "held: mem_get_info total 32768 MiB"
    assert "| limit + pacing at 0.5 | 190.00 | 52.6 % |" in gpu_check_overhead.table(found)
    found["runs"]["bare"] = [{"error": "exit 1: CUDA error"}]
    assert gpu_check_overhead.verdict(found)[
        "interposer, no limit: ≥ 98 % of bare"] == "failed: exit 1: CUDA error"


def _job(placement: dict[str, Any], result: dict[str, Any] | None,
         enforcement: str = "interposer", exit_code: int = 0) -> dict[str, Any]:
    return {"placement": placement, "enforcement": enforcement, "exit_code": exit_code,
            "phase": "succeeded", "result": result, "output_tail": ""}


def test_sharing_reports_the_total_time_and_utilisation_against_the_claims() -> None:
    quarter = {"node": "n", "gpus": [0], "gpu_milli": 250}
    whole = {"node": "n", "gpus": [0], "gpu_milli": 1000}
    found = {"no_cuda": None, "sizes": "--model small",
             "whole": {"total_s": 40.0, "utilisation_pct": 30.0, "nvml_why": None,
                       "jobs": [_job(whole, {"steps_per_s": 300.0})] * 4},
             "shared": {"total_s": 22.0, "utilisation_pct": 60.0, "nvml_why": None,
                        "jobs": [_job(quarter, {"steps_per_s": 80.0})] * 4}}
    checks = gpu_check_sharing.verdict(found)
    assert checks["four quarters on one card"].startswith("held")
    assert checks["together faster than one after another"].endswith("(-45 %)")
    assert checks["Baidu's −40 % total time"] == "held: -45 % total time"
    assert checks["Baidu's +50 % utilisation"] == "held: mean 60 % shared vs 30 % whole"
    found["shared"]["total_s"] = 45.0
    assert gpu_check_sharing.verdict(found)[
        "together faster than one after another"].startswith("failed")
    found["shared"]["jobs"][0] = _job(quarter, None, exit_code=1)
    assert gpu_check_sharing.verdict(found)["every job trained"].startswith("failed")


def test_mps_checks_the_sm_share_and_the_memory_limit_read_inside() -> None:
    inside = {"env": {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
                      "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=8192M",
                      "CUDA_MPS_PIPE_DIRECTORY": "/x/pipe"},
              "sm_count": 66, "seen": {"total_mib": 8192},
              "over": {"ok": False, "error": "OutOfMemoryError"}}
    place = {"node": "n", "gpus": [0], "gpu_milli": 500}
    found = {"no_cuda": None, "bare": {"sm_count": 132},
             "jobs": [_job(place, inside, "mps + interposer (…)")] * 2}
    checks = gpu_check_mps.verdict(found)
    assert all(v.startswith("held") for v in checks.values()), checks
    found["jobs"] = [_job(place, {**inside, "sm_count": 132}, "none (mps: daemon failed)")] * 2
    checks = gpu_check_mps.verdict(found)
    assert checks["enforced by MPS"].startswith("failed")
    assert checks["SM percentage in effect"].startswith("failed: SMs reported inside [132")


def test_mig_matches_instances_and_the_job_lands_on_the_smallest() -> None:
    small = {"card": 0, "uuid": "MIG-a", "profile": "1g.18gb", "memory_mib": 16384,
             "slices": 1, "total_slices": 7}
    big = {**small, "uuid": "MIG-b", "profile": "3g.71gb", "memory_mib": 70000, "slices": 3}
    inst = gpu_check_mig.MigInstance(**small)
    asked = gpu_check_mig.share_of(inst)
    assert asked == {"gpus": 0.142, "gpu_memory": "16384MiB"}
    assert mig_holds(inst, 142, 16384)  # what the server's MIG match accepts
    job = _job({}, {"env": {"CUDA_VISIBLE_DEVICES": "MIG-a"}, "seen": {"total_mib": 16300},
                    "device": "NVIDIA H200 MIG 1g.18gb"}, "mig 1g.18gb (MIG-a)")
    found = {"instances": [small, big], "smi_uuids": ["MIG-b", "MIG-a"], "no_cuda": None,
             "mechanisms": ["interposer", "mig"], "job": job, "smallest": small,
             "asked": asked}
    checks = gpu_check_mig.verdict(found)
    assert all(v.startswith("held") for v in checks.values()), checks
    found["smi_uuids"] = ["MIG-a"]
    assert gpu_check_mig.verdict(found)["instances match nvidia-smi -L"].startswith("failed")


def test_services_verdict_skips_gpu_claims_on_fake_gpus_only() -> None:
    shape = {"placement": [["n", [0], 0.5]], "requests": 10, "not_200": 0, "rps": 5.0,
             "device": "cpu"}
    found = {"fake_gpus": FAKE, "half_on_one_card": True, "half": shape, "whole": shape}
    checks = gpu_check_hooks.services_verdict(found)
    assert checks["replicas run on the GPU"].startswith("skipped: fake GPUs")
    assert checks["two half replicas on one card"].startswith("held")
    found["fake_gpus"] = None  # real GPUs, yet the replicas ran on the CPU: a failure
    assert gpu_check_hooks.services_verdict(found)["replicas run on the GPU"].startswith(
        "failed")


class OutOfMemoryError(RuntimeError):
    """Named as torch's is: the probe reports the exception's type name."""


class FakeTorch:
    """What gpu_job_memory.py uses of torch, over a ledger of ``limit_mib`` (what the
    interposer would enforce) on a 143,771 MiB card."""

    __version__ = "fake"
    uint8 = "uint8"

    def __init__(self, limit_mib: int) -> None:
        self.limit, self.used = limit_mib << 20, 0
        self.cuda = self
        self.multi_processor_count, self.name = 132, "NVIDIA H200"
        self.total_memory = 143771 << 20

    def is_available(self) -> bool:
        return True

    def get_device_properties(self, _index: int) -> FakeTorch:
        return self

    def synchronize(self) -> None:
        pass

    def mem_get_info(self) -> tuple[int, int]:
        return self.limit - self.used, self.limit

    def empty(self, size: int, dtype: str, device: str) -> int:
        if self.used + size > self.limit:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate …")
        self.used += size
        return size


def _probe(monkeypatch: pytest.MonkeyPatch, limit_mib: int, device_mib: int,
           child_fails: bool = True) -> dict[str, Any]:
    import subprocess

    import gpu_job_memory

    torch = FakeTorch(device_mib)
    monkeypatch.setitem(sys.modules, "torch", torch)
    child = {"total_mib": limit_mib, "free_mib": limit_mib // 4,
             "alloc": {"ok": not child_fails, "error": "OutOfMemoryError"}}
    monkeypatch.setattr(gpu_job_memory.subprocess, "run", lambda *a, **k: subprocess.
                        CompletedProcess(a, 0, "GPUACC " + json.dumps(child), ""))
    monkeypatch.setenv("LD_PRELOAD", "/x/libgpushare.so")
    return dict(gpu_job_memory.probe(limit_mib, 5120))


def test_the_interposer_verdict_reads_what_the_job_probe_prints(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gpu_check_interposer as inter

    found = {"no_cuda": None,
             "limited": {"result": _probe(monkeypatch, 4096, 4096)},
             "whole": {"result": _probe(monkeypatch, 0, 143771)},
             "pass_through": _probe(monkeypatch, 0, 143771)}
    checks = inter.inside(found)
    assert all(v.startswith("held") for v in checks.values()), checks
    assert checks["CUDA OOM past the limit, caught in the job"].startswith(
        "held: holding 3 GiB, 2 GiB more: OutOfMemoryError")
    found["limited"]["result"] = _probe(monkeypatch, 4096, 4096, child_fails=False)
    assert inter.inside(found)["two processes of the job share the 4 GiB"].startswith(
        "failed")
    found["limited"]["result"] = _probe(monkeypatch, 4096, 143771)  # no limit held
    checks = inter.inside(found)
    assert checks["sees 4 GiB total"].startswith("failed: mem_get_info total 143771 MiB")
    assert checks["CUDA OOM past the limit, caught in the job"].startswith("failed")
    found["whole"]["result"] = {"skipped": "torch 2.11: CUDA not available"}
    assert set(inter.inside(found).values()) == {
        "failed: inside the job: torch 2.11: CUDA not available (CUDA works outside it)"}
    found["no_cuda"] = "torch 2.13.0+cpu: CUDA not available"
    assert set(inter.inside(found).values()) == {f"skipped: {found['no_cuda']}"}


def test_without_a_c_compiler_the_interposer_sections_are_skipped_saying_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gpu_check_interposer

    monkeypatch.setenv("GPUPOOL_INTERPOSER_BUILD", "always")  # not the library built here
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(gpu_check_interposer, "LIB_DIR", tmp_path / "lib")
    with pytest.raises(Skip, match="the interposer cannot be built here: no C compiler"):
        gpu_check_interposer.interposer_library()
    with pytest.raises(Skip, match="no C compiler"):
        gpu_check_overhead.run(FAKE)
