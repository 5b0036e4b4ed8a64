"""The GPU-sharing interposer (libgpushare.so) on a stand-in driver, without a GPU.

A stand-in libcuda.so.1 (tests/interposer/standin_cuda.c, host memory, an 80 GiB card) and
real C probe programs (tests/interposer/probe.c) run under LD_PRELOAD of the interposer built
by gpupool's own build. Each must-show behaviour of the issue has a test: allocations past the
limit fail with CUDA_ERROR_OUT_OF_MEMORY, processes of one job share one limit, the memory
queries report the slice, cuGetProcAddress answers are intercepted, a killed process's usage
is released, and launches are paced to the compute share: each launch reserves cost / share
of the job's pacing clock in the share file and waits while that clock is past the burst
(checked on the clock itself; no test measures wall time: bench/interposer_pacing_bench.py
reports the launch rates).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpupool.interposer import build, job_env, sharefile

sys.path.insert(0, str(Path(__file__).resolve().parent / "interposer"))
from standin import Tools, build_tools

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or build.find_compiler() is None,
    reason="the interposer needs Linux and a C compiler (none found: install gcc or set CC)",
)

OK, OOM = "0", "2"
GIB = 1 << 30
CARD = 80 * GIB
QUARTER_MIB = 20480  # 0.25 of the 80 GiB card, as launch_env exports it


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return build_tools(tmp_path_factory.mktemp("interposer"))


@pytest.fixture
def share(tmp_path: Path) -> Path:
    return sharefile.create(tmp_path / "job.share")


def codes(lines: list[list[str]]) -> list[str]:
    return [line[1] for line in lines]


# -- build ---------------------------------------------------------------------------


def test_build_is_cached_and_available(tools: Tools, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tools.lib.stat().st_mtime_ns
    assert build.build(tools.lib.parent) == tools.lib
    assert tools.lib.stat().st_mtime_ns == before  # same source, flags, compiler: reused
    monkeypatch.setenv(build.BUILD_ENV, "always")  # this one, not the install's
    ok, where = build.available(tools.lib.parent)
    assert ok and where == str(tools.lib)


def test_build_failure_names_the_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(build.BuildError, match=r"/bin/false.*failed"):
        build.build(tmp_path, compiler=["/bin/false"])
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setenv(build.BUILD_ENV, "always")  # not the library the install built
    ok, why = build.available(tmp_path)
    assert not ok and "no C compiler" in why and "install" in why
    assert not (tmp_path / build.LIB_NAME).exists()


# -- memory limit --------------------------------------------------------------------


def test_without_limits_everything_passes_through(tools: Tools) -> None:
    out = tools.run("alloc", 30720, "info", "total")
    assert codes(out) == [OK, OK, OK]
    assert out[1][2:] == [str(CARD - 30 * GIB), str(CARD)]
    assert out[2][2] == str(CARD)


@pytest.mark.parametrize("via", ["linked", "dlsym", "proc", "proc_v2"])
def test_past_the_limit_is_out_of_memory_and_the_slice_is_the_card(tools: Tools, via: str) -> None:
    out = tools.run(
        "alloc", 30720, "alloc", 10240, "info", "total", "alloc", 10241, "alloc", 10240,
        linked=via == "linked", PROBE_VIA=via, GPUPOOL_GPU_MEMORY_LIMIT_MIB=str(QUARTER_MIB),
    )
    assert codes(out) == [OOM, OK, OK, OK, OOM, OK]
    assert out[2][2:] == [str(10 * GIB), str(20 * GIB)]  # free, total of a 20 GiB card
    assert out[3][2] == str(20 * GIB)


@pytest.mark.parametrize("kind", ["alloc", "managed", "async", "pool", "create"])
def test_every_allocation_path_counts_and_its_free_gives_back(tools: Tools, kind: str) -> None:
    out = tools.run(kind, 600, kind, 600, "free", kind, 600, "info",
                    GPUPOOL_GPU_MEMORY_LIMIT_MIB="1024")
    assert codes(out) == [OK, OOM, OK, OK, OK]
    assert out[4][2] == str(424 << 20)  # 1024 MiB less the 600 still allocated


def test_concurrent_allocations_keep_the_ledger_exact(tools: Tools, share: Path) -> None:
    # 4 threads in each of 2 processes, 64 KiB blocks, a limit that refuses some of them
    env = tools.env(GPUPOOL_GPU_MEMORY_LIMIT_MIB="3", GPUPOOL_SHARE_FILE=str(share))
    procs = [subprocess.Popen([str(tools.probe), "churn", "4", "20000", "64", "info"], env=env,
                              text=True, stdout=subprocess.PIPE) for _ in range(2)]
    outs = [[line.split() for line in p.communicate(timeout=120)[0].splitlines()]
            for p in procs]
    assert all(codes(out) == [OK, OK] for out in outs), outs
    assert sum(int(out[0][2]) for out in outs) > 0  # the limit did bite
    assert sharefile.used_bytes(share)[0] == 0
    assert codes(tools.run("alloc", 3, env=env)) == [OK]  # all of it is free again


def test_pitched_allocations_count_their_pitch(tools: Tools) -> None:
    out = tools.run("pitch", 1000, 1000, "pitch", 1000, 30, "free", "info",
                    GPUPOOL_GPU_MEMORY_LIMIT_MIB="1")
    assert codes(out) == [OK, OOM, OK, OK]
    assert out[0][2] == "1024"
    assert out[3][2] == str(1 << 20)  # all given back


def test_processes_of_one_job_share_one_limit(tools: Tools, share: Path) -> None:
    env = tools.env(GPUPOOL_GPU_MEMORY_LIMIT_MIB=str(QUARTER_MIB), GPUPOOL_SHARE_FILE=str(share))
    with holder(tools, env, 12288) as pid:
        assert sharefile.used_bytes(share)[0] == 12 * GIB
        assert sharefile.usage(share) == {pid: [12 * GIB] + [0] * 15}
        out = tools.run("alloc", 10240, "alloc", 8192, "info", env=env)
        assert codes(out) == [OOM, OK, OK]
        assert out[2][2:] == ["0", str(20 * GIB)]  # nothing left of the job's 20 GiB
        assert sharefile.used_bytes(share)[0] == 12 * GIB  # the second one exited: released


def test_a_killed_process_usage_is_released(tools: Tools, share: Path) -> None:
    env = tools.env(GPUPOOL_GPU_MEMORY_LIMIT_MIB=str(QUARTER_MIB), GPUPOOL_SHARE_FILE=str(share))
    proc = start_holder(tools, env, 15360)
    try:
        assert codes(tools.run("alloc", 10240, env=env)) == [OOM]
        proc.send_signal(signal.SIGKILL)
        wait_for_zombie(proc.pid)  # not reaped yet: its record must go all the same
        assert sharefile.used_bytes(share)[0] == 0  # a reader leaves it out too
        assert codes(tools.run("alloc", 10240, "alloc", 10240, env=env)) == [OK, OK]
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_process_killed_holding_the_lock_does_not_block_the_job(
    tools: Tools, share: Path
) -> None:
    env = tools.env(GPUPOOL_GPU_MEMORY_LIMIT_MIB=str(QUARTER_MIB), GPUPOOL_SHARE_FILE=str(share))
    assert codes(tools.run("alloc", 1024, "lockdie", env=env)) == [OK, OK]
    assert codes(tools.run("alloc", 20480, "info", env=env)) == [OK, OK]  # recovered, not hung


def test_the_share_file_limit_bounds_the_environment(tools: Tools, tmp_path: Path) -> None:
    narrow = sharefile.create(tmp_path / "narrow", limit_mib=1024)
    assert sharefile.limit_bytes(narrow) == GIB
    out = tools.run("alloc", 2048, "total", GPUPOOL_GPU_MEMORY_LIMIT_MIB=str(QUARTER_MIB),
                    GPUPOOL_SHARE_FILE=str(narrow))
    assert codes(out) == [OOM, OK] and out[1][2] == str(GIB)
    # the file's limit alone is enough, and a process may narrow it further
    assert codes(tools.run("alloc", 2048, GPUPOOL_SHARE_FILE=str(narrow))) == [OOM]
    wide = sharefile.create(tmp_path / "wide", limit_mib=QUARTER_MIB)
    out = tools.run("alloc", 2048, GPUPOOL_GPU_MEMORY_LIMIT_MIB="1024",
                    GPUPOOL_SHARE_FILE=str(wide))
    assert codes(out) == [OOM]


def test_the_limit_file_holds_when_the_job_rewrites_its_share_file(
    tools: Tools, tmp_path: Path
) -> None:
    """The share file is the job's to write (its ledger); the limit file is not. A job that
    raises (or zeroes) the limit in its share file and drops its environment's limit is
    still held to the limit file's."""
    ledger = sharefile.create(tmp_path / "ledger", limit_mib=1024)
    limit = sharefile.write_limit(tmp_path / "limit", 1024)
    assert limit.read_text() == f"{GIB}\n" and oct(limit.stat().st_mode & 0o777) == "0o644"
    data = bytearray(ledger.read_bytes())
    data[24:32] = (0).to_bytes(8, "little")  # the header's limit_bytes: "no limit"
    ledger.write_bytes(bytes(data))
    assert sharefile.limit_bytes(ledger) == 0
    out = tools.run("alloc", 2048, "total", GPUPOOL_SHARE_FILE=str(ledger),
                    GPUPOOL_SHARE_LIMIT_FILE=str(limit))
    assert codes(out) == [OOM, OK] and out[1][2] == str(GIB)
    assert codes(tools.run("alloc", 2048, GPUPOOL_SHARE_FILE=str(ledger))) == [OK]


def test_a_missing_share_file_is_reported_and_the_limit_still_holds(
    tools: Tools, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(tools.probe), "alloc", "2048"],
        env=tools.env(GPUPOOL_GPU_MEMORY_LIMIT_MIB="1024",
                      GPUPOOL_SHARE_FILE=str(tmp_path / "gone")),
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert done.stdout.split() == ["alloc", OOM]
    assert "cannot open the share file" in done.stderr and "on its own" in done.stderr


def test_nvml_reports_the_slice_of_the_job_gpus(tools: Tools, share: Path) -> None:
    env = tools.env(GPUPOOL_GPU_MEMORY_LIMIT_MIB=str(QUARTER_MIB), GPUPOOL_SHARE_FILE=str(share),
                    CUDA_VISIBLE_DEVICES="3,5")
    with holder(tools, env, 1024):
        out = tools.run("nvml", 3, "nvml", 5, "nvml", 2, env=env)
    slice_ = [str(20 * GIB), str(19 * GIB), str(GIB)]
    assert out[0][1:] == [OK, *slice_] and out[1][1:] == [OK, *slice_]  # GPU 3 = ordinal 0
    assert out[2][2:] == [str(20 * GIB), str(20 * GIB), "0"]  # GPU 5: nothing on it yet
    assert out[4][2:] == [str(CARD), str(CARD), "0"]  # GPU 2 is not the job's


# -- driver entry points ---------------------------------------------------------------


def test_get_proc_address_answers_are_the_interposer(tools: Tools) -> None:
    names = ["cuMemAlloc", "cuMemFree", "cuMemGetInfo", "cuDeviceTotalMem", "cuMemCreate",
             "cuLaunchKernel", "cuGraphLaunch", "cuGraphInstantiate", "cuGetProcAddress", "cuInit"]
    out = tools.run(*[x for n in names for x in ("swapped", n)], PROBE_VIA="proc")
    assert [line[2] for line in out] == ["1"] * (len(names) - 1) + ["0"]  # cuInit is not ours
    per_thread = ["cuLaunchKernel", "cuMemAllocAsync", "cuMemFreeAsync", "cuGraphLaunch"]
    out = tools.run(*[x for n in per_thread for x in ("swapped", n)], PROBE_VIA="proc",
                    PROBE_FLAGS="2")
    assert [line[2] for line in out] == ["1"] * len(per_thread)
    out = tools.run("async", 30720, "async", 10240, PROBE_VIA="proc_v2", PROBE_FLAGS="2",
                    GPUPOOL_GPU_MEMORY_LIMIT_MIB=str(QUARTER_MIB))
    assert codes(out) == [OOM, OK]


def test_dlsym_rtld_next_keeps_its_meaning(tools: Tools) -> None:
    out = tools.run("next", "getpid", "next", "malloc", "next", "cuMemAlloc_v2")
    assert [line[2] for line in out] == ["1", "1", "1"]


def test_a_python_process_using_ctypes_is_limited(tools: Tools) -> None:
    code = (
        "import ctypes\n"
        "cu = ctypes.CDLL('libcuda.so.1')\n"
        "ptr, ctx = ctypes.c_uint64(), ctypes.c_void_p()\n"
        "assert cu.cuInit(0) == 0 and cu.cuCtxCreate_v2(ctypes.byref(ctx), 0, 0) == 0\n"
        "print(cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(30 << 30)),"
        " cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(10 << 30)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        env=tools.env(GPUPOOL_GPU_MEMORY_LIMIT_MIB=str(QUARTER_MIB)),
    )
    assert done.stdout.split() == [OOM, OK]


# -- launch pacing ---------------------------------------------------------------------


# The pacing clock of each device lives in the share file (struct gs_header's tat_ns, after
# the 64-byte lock): the CLOCK_MONOTONIC time, in ns, at which the job's next launch slot
# starts. Every paced launch moves it on by cost / share (from now, if it fell behind), and a
# launch sleeps while it is more than the burst ahead of now. Seeded an hour ahead, the clock
# cannot fall behind during a test, so what the launches reserved is exactly its advance,
# however loaded the machine: no test here measures wall time (bench/interposer_pacing_bench.py
# reports the launch rates that result).
PACING_CLOCKS = 128  # offsetof(struct gs_header, tat_ns)
AN_HOUR_NS = 3600 * 10**9
NO_WAIT = {"GPUPOOL_LAUNCH_BURST_US": str(2 * 3600 * 10**6)}  # past the seeded clock's lead


@pytest.mark.parametrize(("env", "interval_ns"), [
    ({"GPUPOOL_GPU_FRACTION": "0.25", "GPUPOOL_LAUNCH_COST_US": "100"}, 400_000),
    # CUDA_MPS_ACTIVE_THREAD_PERCENTAGE is the share when GPUPOOL_GPU_FRACTION is not set
    ({"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25", "GPUPOOL_LAUNCH_COST_US": "100"}, 400_000),
    ({"GPUPOOL_GPU_FRACTION": "0.5", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
      "GPUPOOL_LAUNCH_COST_US": "100"}, 200_000),
    ({"GPUPOOL_GPU_FRACTION": "a quarter", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
      "GPUPOOL_LAUNCH_COST_US": "100"}, 400_000),
    ({"GPUPOOL_GPU_FRACTION": "0.25"}, 200_000),  # a launch costs 50 µs unless told
    ({"GPUPOOL_GPU_FRACTION": "0.3", "GPUPOOL_LAUNCH_COST_US": "100"}, 333_333),
])
def test_launches_are_paced_to_the_compute_share(
    tools: Tools, share: Path, env: dict[str, str], interval_ns: int
) -> None:
    start = seed_pacing_clock(share)
    out = tools.run(*["launch", 0] * 5, GPUPOOL_SHARE_FILE=str(share), **NO_WAIT, **env)
    assert [line[1:3] for line in out] == [[OK, "1"]] * 5
    assert pacing_clock(share) - start == 5 * interval_ns


def test_graph_launches_are_paced_per_node(tools: Tools, share: Path) -> None:
    start = seed_pacing_clock(share)
    out = tools.run("graph", 4, 0, "graph", 1, 0, "launch", 0, GPUPOOL_SHARE_FILE=str(share),
                    GPUPOOL_GPU_FRACTION="0.25", GPUPOOL_LAUNCH_COST_US="50", **NO_WAIT)
    assert [line[1:3] for line in out] == [[OK, "1"]] * 3
    assert pacing_clock(share) - start == (4 + 1 + 1) * 200_000


def test_processes_of_one_job_share_one_launch_budget(
    tools: Tools, share: Path, tmp_path: Path
) -> None:
    start = seed_pacing_clock(share)
    env = tools.env(NO_WAIT, GPUPOOL_GPU_FRACTION="0.25", GPUPOOL_LAUNCH_COST_US="100",
                    GPUPOOL_SHARE_FILE=str(share))
    procs = [subprocess.Popen([str(tools.probe), *["launch", "0"] * 200], env=env, text=True,
                              stdout=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].split("\n") for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(line.startswith("launch 0 1 ") for out in outs for line in out) == 600
    assert pacing_clock(share) - start == 600 * 400_000  # all three advanced one clock
    other = sharefile.create(tmp_path / "other.share")  # another job's: its own budget
    other_start = seed_pacing_clock(other)
    tools.run("launch", 0, env={**env, "GPUPOOL_SHARE_FILE": str(other)})
    assert pacing_clock(other) - other_start == 400_000
    assert pacing_clock(share) - start == 600 * 400_000


def test_a_launch_past_the_burst_waits_for_its_slot(tools: Tools, share: Path) -> None:
    """With the clock an hour ahead and the default burst (10 ms), a paced launch takes its
    slot (the clock moves on by its interval) and then sleeps for about an hour: it is asleep,
    without having returned, when it is looked at, however loaded the machine. Within the
    burst the same launch returns at once."""
    start = seed_pacing_clock(share)
    env = tools.env(GPUPOOL_GPU_FRACTION="0.25", GPUPOOL_LAUNCH_COST_US="100",
                    GPUPOOL_SHARE_FILE=str(share))
    proc = subprocess.Popen([str(tools.probe), "launch", "0"], env=env, text=True,
                            stdout=subprocess.PIPE)
    try:
        wait_for(lambda: pacing_clock(share) == start + 400_000, "the launch to take its slot")
        wait_for(lambda: process_state(proc.pid) == "S", "the launch to sleep")
    finally:
        proc.kill()
        out = proc.communicate(timeout=30)[0]
    assert out == ""  # the launch never returned
    assert tools.run("launch", 0, env={**env, **NO_WAIT})[0][1:3] == [OK, "1"]
    assert pacing_clock(share) == start + 2 * 400_000


@pytest.mark.parametrize("env", [
    {},
    {"GPUPOOL_GPU_FRACTION": "1"},
    {"GPUPOOL_GPU_FRACTION": "2"},
    {"GPUPOOL_GPU_FRACTION": "0"},
    {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "100"},
    {"GPUPOOL_GPU_FRACTION": "0.25", "GPUPOOL_LAUNCH_COST_US": "0"},
])
def test_no_pacing_without_a_share(tools: Tools, share: Path, env: dict[str, str]) -> None:
    """Not paced: the clock an hour ahead and the default burst would make a paced launch
    sleep an hour (past the probe's timeout); these return, and leave the clock alone."""
    start = seed_pacing_clock(share)
    out = tools.run("launch", 0, "graph", 4, 0, GPUPOOL_SHARE_FILE=str(share), **env)
    assert [line[1:3] for line in out] == [[OK, "1"]] * 2
    assert pacing_clock(share) == start


# -- the node side's helpers -------------------------------------------------------------


def test_job_env_puts_the_interposer_first(tmp_path: Path) -> None:
    env = job_env("/x/libgpushare.so", tmp_path / "s", "/a.so:/x/libgpushare.so /b.so")
    assert env == {"LD_PRELOAD": "/x/libgpushare.so /a.so /b.so",
                   "GPUPOOL_SHARE_FILE": str(tmp_path / "s")}


def test_sharefile_rejects_what_it_did_not_write(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"x" * sharefile.FILE_SIZE)
    with pytest.raises(ValueError, match="not a gpushare share file"):
        sharefile.usage(bogus)
    with pytest.raises(ValueError, match=">= 0"):
        sharefile.create(tmp_path / "s", limit_mib=-1)
    sharefile.remove(bogus)
    sharefile.remove(bogus)  # already gone: fine
    assert not bogus.exists()


# -- helpers -------------------------------------------------------------------------------


def pacing_clock(share: Path, dev: int = 0) -> int:
    """The share file's launch-pacing clock of device ``dev`` (CLOCK_MONOTONIC ns)."""
    with open(share, "rb") as f:
        f.seek(PACING_CLOCKS + 8 * dev)
        return int.from_bytes(f.read(8), "little")


def seed_pacing_clock(share: Path, dev: int = 0) -> int:
    """Set the clock of device ``dev`` an hour ahead of now (before any process maps the
    file; time.monotonic_ns reads the interposer's clock) and return it."""
    value = time.monotonic_ns() + AN_HOUR_NS
    data = bytearray(share.read_bytes())
    data[PACING_CLOCKS + 8 * dev : PACING_CLOCKS + 8 * dev + 8] = value.to_bytes(8, "little")
    share.write_bytes(bytes(data))
    return value


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, Z, ...)."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rindex(b")") + 2 :][:1].decode()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (a generous deadline: it only bounds a failing test)."""
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_for_zombie(pid: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        if stat[stat.rindex(b")") + 2 :].startswith(b"Z"):
            return
        time.sleep(0.01)
    pytest.fail(f"process {pid} did not die after SIGKILL")


def start_holder(tools: Tools, env: dict[str, str], mib: int) -> subprocess.Popen[str]:
    """A probe that allocated ``mib`` and holds it until its stdin closes (or it is killed)."""
    proc = subprocess.Popen([str(tools.probe), "alloc", str(mib), "hold"], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["alloc", OK]
    assert proc.stdout.readline().split() == ["hold", OK]
    return proc


@contextlib.contextmanager
def holder(tools: Tools, env: dict[str, str], mib: int) -> Iterator[int]:
    """A holding probe for the block (its pid), ended cleanly after it."""
    proc = start_holder(tools, env, mib)
    try:
        yield proc.pid
    finally:
        proc.communicate(timeout=30)


def test_the_install_builds_the_library_from_the_shipped_source() -> None:
    """`pip install` (setup.py's build hook) compiled it into gpupool/interposer/lib, and
    `available()` uses that one (on this machine, which has a C compiler)."""
    found = build.installed()
    assert found is not None, "the install did not build the interposer (is there a C compiler?)"
    assert found.parent == build.source_dir() / "lib"
    assert build.available("/nonexistent/never-used") == (True, str(found))
