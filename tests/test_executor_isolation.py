"""The local executor's isolation, process by process: the command runs as the given Unix
account with no supplementary groups or capabilities, an allowlisted environment, umask 077
and resource limits; the root supervisor never sees the job's environment; a working
directory the account cannot enter fails the launch with the reason; and in the bubblewrap
sandbox a graceful stop still reaches the command and "/" as working directory does not put
the host back over the hidden paths. Needs root (CI runs as root)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpupool.executors import accounts, shim
from gpupool.executors.base import Handle, LaunchError, LaunchSpec, Outcome
from gpupool.executors.local import LocalExecutor
from gpupool.executors.sandbox import detect
from server_harness import job_reachable_dir, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="running as another account "
                                "needs root (CI runs as root)")
NAME = "gp-test-exec"
OWNER = "test-exec"


@pytest.fixture(scope="module")
def account() -> Iterator[accounts.Account]:
    made, _ = accounts.ensure(NAME, OWNER)
    yield made
    accounts.remove(NAME, OWNER)


@pytest.fixture
def place() -> Iterator[Path]:
    folder = job_reachable_dir("gpx")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run(executor: LocalExecutor, place: Path, command: list[str], **extra: object
        ) -> tuple[Handle, Outcome, str]:
    run_dir = place / f"run{time.monotonic_ns()}"
    spec = LaunchSpec(job_id="1", attempt=1, command=command, run_dir=str(run_dir),
                      run_as=NAME, owner=OWNER, job_dir=str(place / "jobs" / run_dir.name),
                      **extra)  # type: ignore[arg-type]
    handle = executor.launch(spec)
    outcome = wait_for(lambda: executor.poll(handle), timeout=30)
    return handle, outcome, Path(handle.log_path).read_text()


def test_the_command_runs_as_the_account_with_only_what_it_is_given(
    account: accounts.Account, place: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVER_SECRET_FOR_TEST", "must-not-leak-7714")
    script = ("id -u; id -G; grep CapEff /proc/self/status; umask; ulimit -n; "
              "touch $GPUPOOL_JOB_DIR/made; stat -c %a $GPUPOOL_JOB_DIR/made; env")
    _, outcome, log = run(LocalExecutor(), place, ["/bin/sh", "-c", script],
                          env={"MINE": "yes"})
    assert outcome.exit_code == 0, log
    lines = log.splitlines()
    assert lines[0] == str(account.uid) and lines[1] == str(account.gid)  # no extra groups
    assert lines[2].split()[1] == "0000000000000000"  # no capabilities
    assert lines[3] == "0077" and lines[5] == "600"
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert int(lines[4]) == (65536 if hard == resource.RLIM_INFINITY else min(65536, hard))
    env = dict(line.split("=", 1) for line in lines[6:] if "=" in line)
    assert env["MINE"] == "yes" and env["USER"] == NAME and env["HOME"] == account.home
    assert "must-not-leak-7714" not in log and "GPUPOOL_HOME" not in env


def test_the_root_supervisor_never_carries_the_jobs_environment(
    account: accounts.Account, place: Path
) -> None:
    executor = LocalExecutor()
    spec = LaunchSpec(job_id="2", attempt=1, command=["/bin/sleep", "5"],
                      env={"LD_PRELOAD": "/nonexistent/evil.so", "JOB_ONLY": "x1"},
                      run_dir=str(place / "run"), run_as=NAME, owner=OWNER)
    handle = executor.launch(spec)
    try:
        shim_env = wait_for(lambda: Path(f"/proc/{handle.pid}/environ").read_bytes(), 10)
        assert b"LD_PRELOAD" not in shim_env and b"JOB_ONLY" not in shim_env
        assert os.stat(f"/proc/{handle.pid}").st_uid == 0  # the supervisor is root ...
        child = int(wait_for(lambda: (place / "run" / "child.pid").exists() and
                             (place / "run" / "child.pid").read_text(), 10))
        assert os.stat(f"/proc/{child}").st_uid == account.uid  # ... the command is not
        assert oct(os.stat(place / "run" / "launch.json").st_mode & 0o777) == "0o600"
    finally:
        executor.kill(handle)
        wait_for(lambda: executor.poll(handle), timeout=10)


def test_a_workdir_the_account_cannot_enter_fails_the_launch_with_the_reason(
    account: accounts.Account, place: Path
) -> None:
    private = place / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(LaunchError, match=f"{NAME}.*cannot enter.*{private.name}"):
        run(LocalExecutor(), place, ["/bin/true"], workdir=str(private))


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_in_the_sandbox_a_graceful_stop_reaches_the_command_and_root_stays_hidden(
    account: accounts.Account, place: Path
) -> None:
    executor = LocalExecutor(sandbox=detect("bwrap", hide=["/root"]))
    _, outcome, log = run(executor, place, ["/bin/sh", "-c", "ls -A /root | wc -l; pwd"],
                          workdir="/")
    assert outcome.exit_code == 0 and log.split() == ["0", "/"], log
    spec = LaunchSpec(job_id="3", attempt=1, run_dir=str(place / "graceful"), run_as=NAME,
                      command=["/bin/sh", "-c", "trap 'echo got TERM; exit 0' TERM; "
                               "echo ready; while true; do sleep 0.1; done"])
    handle = executor.launch(spec)
    wait_for(lambda: "ready" in Path(handle.log_path).read_text(), timeout=20)
    executor.terminate(handle)
    outcome = wait_for(lambda: executor.poll(handle), timeout=20)
    assert outcome.exit_code == 0 and "got TERM" in Path(handle.log_path).read_text()
    spec = LaunchSpec(job_id="4", attempt=1, run_dir=str(place / "killed"), run_as=NAME,
                      command=["/bin/sleep", "30"])
    handle = executor.launch(spec)
    time.sleep(0.3)
    executor.kill(handle)
    assert wait_for(lambda: executor.poll(handle), timeout=20).exit_code == -signal.SIGKILL


@pytest.mark.parametrize("sandboxed", [False, True], ids=["plain", "bwrap"])
def test_a_command_whose_root_shim_was_killed_keeps_its_exit_code(
    account: accounts.Account, place: Path, sandboxed: bool
) -> None:
    if sandboxed and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    executor = LocalExecutor(sandbox=detect("bwrap" if sandboxed else "none", hide=["/root"]))
    gate = place / "gate"
    spec = LaunchSpec(job_id="5", attempt=1, run_dir=str(place / f"shimless{sandboxed}"),
                      run_as=NAME, owner=OWNER, job_dir=str(place / "jobs" / "shimless"),
                      readable=(str(place),),
                      command=["/bin/sh", "-c", f"echo ready; while [ ! -e {gate} ]; do "
                               "sleep 0.05; done; echo done; exit 0"])
    handle = executor.launch(spec)
    wait_for(lambda: "ready" in Path(handle.log_path).read_text(), timeout=20)
    os.kill(handle.pid, signal.SIGKILL)  # the root supervisor dies; the job runs on
    wait_for(lambda: executor.poll(handle) is None and not shim.is_running(handle.pid),
             timeout=10)
    gate.touch()
    outcome = wait_for(lambda: executor.poll(handle), timeout=20)
    assert (outcome.exit_code, outcome.lost) == (0, False), outcome
    assert Path(handle.log_path).read_text().split() == ["ready", "done"]
    # the record the job could reach is the run dir's, which it can neither list nor write
    assert os.stat(handle.run_dir).st_uid == 0
    assert oct(os.stat(Path(handle.run_dir) / "command.exit").st_mode & 0o022) == "0o0"
