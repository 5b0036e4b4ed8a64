"""LocalExecutor and its shim, with real processes: exit codes, logs, signals, process groups,
and re-adoption by a fresh executor as after a server restart (``kill -9``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from gpupool.executors import shim
from gpupool.executors.base import SUPERVISOR_LOST, Handle, LaunchError, LaunchSpec, Outcome
from gpupool.executors.local import LocalExecutor, read_range, read_text

PY = sys.executable
DEADLINE_S = 20.0
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str) -> T:
    """The first truthy value of ``probe``, polled until a generous deadline."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def make_spec(tmp_path: Path, code: str, name: str = "a", env: dict[str, str] | None = None,
              workdir: str | None = None) -> LaunchSpec:
    base = tmp_path / name
    return LaunchSpec(job_id=name, attempt=1, command=[PY, "-c", code], env=env or {},
                      workdir=workdir, run_dir=str(base / "run"), log_path=str(base / "log"))


def outcome_of(ex: LocalExecutor, handle: Handle) -> Outcome:
    return wait_for(lambda: ex.poll(handle), f"attempt {handle.job_id} to end")


def ready_code(ready: Path, body: str) -> str:
    """Python that runs ``body`` (setup), says it is ready, then sleeps up to a minute."""
    return f"{body}\nopen({str(ready)!r}, 'w').close()\nimport time\ntime.sleep(60)\n"


TERM_HANDLER = """
import signal, sys, time
def on_term(signum, frame):
    with open({marker!r}, 'a') as f:
        f.write('term\\n')
    time.sleep(0.3)  # a second SIGTERM, if any, would land in the marker too
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
"""


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_is_recovered(tmp_path: Path, code: int) -> None:
    ex = LocalExecutor()
    handle = ex.launch(make_spec(tmp_path, f"raise SystemExit({code})"))
    outcome = outcome_of(ex, handle)
    assert (outcome.exit_code, outcome.lost) == (code, False)
    assert ex.poll(handle) == outcome  # idempotent
    assert not ex.adopt(handle)
    stored = json.loads((Path(handle.run_dir) / "handle.json").read_text())
    assert Handle.from_json(stored) == handle


def test_stdout_and_stderr_land_in_the_log(tmp_path: Path) -> None:
    ex = LocalExecutor()
    code = "import sys; print('to-out', flush=True); print('to-err', file=sys.stderr)"
    handle = ex.launch(make_spec(tmp_path, code))
    assert ex.read_log(str(tmp_path / "nothing-yet.log")) == b""
    assert outcome_of(ex, handle).exit_code == 0
    log = ex.read_log(handle.log_path)
    assert b"to-out\n" in log and b"to-err\n" in log
    assert ex.read_log(handle.log_path, offset=3, limit=4) == log[3:7]
    assert ex.read_log(handle.log_path, offset=len(log)) == b""
    assert ex.read_log(handle.log_path, offset=len(log) + 10) == b""
    with pytest.raises(ValueError, match="offset"):
        ex.read_log(handle.log_path, offset=-1)


def test_env_and_workdir_are_used(tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.getcwd(), flush=True)"
    spec = make_spec(tmp_path, code, env={"CUDA_VISIBLE_DEVICES": "2,3"}, workdir=str(workdir))
    ex = LocalExecutor()
    handle = ex.launch(spec)
    assert outcome_of(ex, handle).exit_code == 0
    assert ex.read_log(handle.log_path).split() == [b"2,3", os.fsencode(workdir.resolve())]


def test_missing_or_unrunnable_program_ends_with_126_or_127(tmp_path: Path) -> None:
    ex = LocalExecutor()
    missing = LaunchSpec("m", 1, ["no-such-program-gpupool"], run_dir=str(tmp_path / "m"))
    handle = ex.launch(missing)
    assert outcome_of(ex, handle).exit_code == 127
    log = ex.read_log(handle.log_path)
    assert b"no-such-program-gpupool" in log and b"no such program" in log
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    handle = ex.launch(LaunchSpec("n", 1, [str(script)], run_dir=str(tmp_path / "n")))
    assert outcome_of(ex, handle).exit_code == 126
    assert b"cannot execute" in ex.read_log(handle.log_path)


def test_launch_rejects_bad_specs_with_clear_messages(tmp_path: Path) -> None:
    ex = LocalExecutor()
    with pytest.raises(LaunchError, match="command is empty"):
        ex.launch(LaunchSpec("e", 1, [], run_dir=str(tmp_path / "e")))
    with pytest.raises(LaunchError, match=r"working directory .* does not exist"):
        ex.launch(make_spec(tmp_path, "pass", workdir=str(tmp_path / "nowhere")))
    handle = ex.launch(make_spec(tmp_path, "pass", name="used"))
    outcome_of(ex, handle)
    with pytest.raises(LaunchError, match="already used"):
        ex.launch(make_spec(tmp_path, "pass", name="used"))


def test_terminate_sends_sigterm_once_and_the_code_is_recovered(tmp_path: Path) -> None:
    marker, ready = tmp_path / "marker", tmp_path / "ready"
    ex = LocalExecutor()
    handle = ex.launch(make_spec(tmp_path, ready_code(ready, TERM_HANDLER.format(
        marker=str(marker)))))
    wait_for(ready.exists, "the command to install its handler")
    ex.terminate(handle)
    assert outcome_of(ex, handle).exit_code == 143
    assert marker.read_text() == "term\n"


def test_sigterm_to_the_shim_alone_is_forwarded(tmp_path: Path) -> None:
    marker, ready = tmp_path / "marker", tmp_path / "ready"
    ex = LocalExecutor()
    handle = ex.launch(make_spec(tmp_path, ready_code(ready, TERM_HANDLER.format(
        marker=str(marker)))))
    wait_for(ready.exists, "the command to install its handler")
    os.kill(handle.pid, signal.SIGTERM)
    assert outcome_of(ex, handle).exit_code == 143
    assert marker.read_text() == "term\n"


def test_kill_stops_a_command_that_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    body = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    ex = LocalExecutor()
    handle = ex.launch(make_spec(tmp_path, ready_code(ready, body)))
    wait_for(ready.exists, "the command to ignore SIGTERM")
    ex.terminate(handle)
    assert ex.poll(handle) is None and ex.adopt(handle)  # both shim and command ignore it
    ex.kill(handle)
    outcome = outcome_of(ex, handle)
    assert outcome.exit_code is not None and outcome.exit_code < 0 and not outcome.lost
    assert ex.poll(handle) == outcome


SPAWN_GRANDCHILD = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
open({pid_file!r}, 'w').write(str(p.pid))
"""


def test_kill_stops_the_whole_process_group(tmp_path: Path) -> None:
    pid_file, ready = tmp_path / "grandchild.pid", tmp_path / "ready"
    ex = LocalExecutor()
    body = SPAWN_GRANDCHILD.format(pid_file=str(pid_file))
    handle = ex.launch(make_spec(tmp_path, ready_code(ready, body)))
    wait_for(ready.exists, "the grandchild to start")
    grandchild = int(pid_file.read_text())
    assert shim.is_running(grandchild)
    ex.kill(handle)
    outcome_of(ex, handle)
    wait_for(lambda: not shim.is_running(grandchild), "the grandchild to be gone")


def test_leftovers_are_killed_when_the_command_exits(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    ex = LocalExecutor()
    handle = ex.launch(make_spec(tmp_path, SPAWN_GRANDCHILD.format(pid_file=str(pid_file))))
    assert outcome_of(ex, handle).exit_code == 0
    wait_for(lambda: not shim.is_running(int(pid_file.read_text())), "leftover to be killed")


def test_a_fresh_executor_adopts_a_running_attempt(tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
            "raise SystemExit(5)")
    spec = make_spec(tmp_path, code)
    launched = LocalExecutor().launch(spec)
    restarted = LocalExecutor()  # as after `kill -9` of the server and a restart
    handle = Handle.from_json(json.loads((Path(spec.run_dir) / "handle.json").read_text()))
    assert handle == launched == restarted.find_handle(spec)
    assert restarted.adopt(handle)
    assert restarted.poll(handle) is None
    go.touch()
    outcome = outcome_of(restarted, handle)
    assert (outcome.exit_code, outcome.lost) == (5, False)


def test_an_attempt_that_ended_while_no_server_ran_keeps_its_code(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "raise SystemExit(7)")
    first = LocalExecutor()
    handle = first.launch(spec)
    del first  # nobody watches the attempt end
    wait_for((Path(spec.run_dir) / "exit").exists, "the shim to record the exit")
    restarted = LocalExecutor()
    assert not restarted.adopt(handle)
    outcome = restarted.poll(handle)
    assert outcome is not None and (outcome.exit_code, outcome.lost) == (7, False)
    assert LocalExecutor().poll(handle) == outcome


def test_find_handle_recovers_an_attempt_whose_handle_was_never_written(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    spec = make_spec(tmp_path, ready_code(ready, "pass"))
    ex = LocalExecutor()
    handle = ex.launch(spec)
    wait_for(ready.exists, "the command to start")
    (Path(spec.run_dir) / "handle.json").unlink()  # the server died before writing it
    found = LocalExecutor().find_handle(spec)
    assert found is not None and (found.pid, found.run_dir) == (handle.pid, handle.run_dir)
    assert LocalExecutor().adopt(found)
    ex.kill(found)
    assert outcome_of(ex, handle).exit_code == -signal.SIGKILL
    assert LocalExecutor().find_handle(make_spec(tmp_path, "pass", name="never")) is None


def test_a_recycled_or_foreign_pid_is_never_adopted_or_signalled(tmp_path: Path) -> None:
    ex = LocalExecutor()
    fake_run_dir = tmp_path / "fake"
    fake_run_dir.mkdir()
    foreign = Handle("f", 1, os.getpid(), str(fake_run_dir), str(tmp_path / "log"), 0.0)
    assert not ex.adopt(foreign)
    ex.terminate(foreign)  # must not signal the test runner's group
    ex.kill(foreign)
    outcome = ex.poll(foreign)
    assert outcome is not None and outcome.lost and outcome.exit_code is None
    assert ex.poll(foreign) == outcome
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    gone = Handle("g", 1, dead.pid, str(tmp_path / "gone"), str(tmp_path / "log"), 0.0)
    assert not ex.adopt(gone)
    gone_outcome = ex.poll(gone)
    assert gone_outcome is not None and gone_outcome.lost


def test_an_attempt_stopped_before_it_began_never_runs(tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "ran"
    run_dir.mkdir()
    shim.write_json_atomic(str(run_dir / shim.STOP_FILE), {"signal": 15, "sent_at": 1.0})
    cmd = [PY, "-I", shim.__file__, str(run_dir), "--", PY, "-c", f"open({str(marker)!r}, 'w')"]
    assert subprocess.run(cmd, check=False).returncode == 128 + 15
    assert json.loads((run_dir / "exit").read_text())["exit_code"] == -15
    assert not marker.exists()
    assert subprocess.run([PY, "-I", shim.__file__, str(run_dir)], check=False,
                          stderr=subprocess.DEVNULL).returncode == shim.USAGE


def test_exit_file_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ex = LocalExecutor()
    handle = ex.launch(make_spec(tmp_path, "pass"))
    outcome_of(ex, handle)
    names = os.listdir(handle.run_dir)
    assert not [n for n in names if ".tmp." in n]
    assert set(json.loads((Path(handle.run_dir) / "exit").read_text())) == {"exit_code",
                                                                            "ended_at"}
    target = tmp_path / "exit"

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        shim.write_json_atomic(str(target), {"exit_code": 1, "ended_at": 2.0})
    assert not target.exists()
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]


SERVER = """
import json, sys
from gpupool.executors.base import LaunchSpec
from gpupool.executors.local import LocalExecutor
spec = LaunchSpec(**json.loads(sys.argv[1]))
print(json.dumps(LocalExecutor().launch(spec).to_json()), flush=True)
sys.stdin.read()  # wait to be killed
"""


def test_attempt_survives_kill_9_of_the_server_and_is_readopted(tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
            "raise SystemExit(9)")
    spec = make_spec(tmp_path, code)
    fields = {"job_id": spec.job_id, "attempt": spec.attempt, "command": list(spec.command),
              "run_dir": spec.run_dir, "log_path": spec.log_path}
    server = subprocess.Popen([PY, "-c", SERVER, json.dumps(fields)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert server.stdout is not None and server.stdin is not None
    handle = Handle.from_json(json.loads(server.stdout.readline()))
    server.kill()
    server.wait()
    server.stdin.close()
    server.stdout.close()
    restarted = LocalExecutor()
    assert restarted.adopt(handle) and restarted.poll(handle) is None
    go.touch()
    outcome = outcome_of(restarted, handle)
    assert (outcome.exit_code, outcome.lost) == (9, False)


# -- supervisor death (the shim killed) ---------------------------------------------------

GATED = """
import os, sys, time
print('before', flush=True)
open({ready!r}, 'w').close()
while not os.path.exists({go!r}):
    time.sleep(0.02)
print('after', flush=True)
sys.exit({code})
"""


def gated_attempt(tmp_path: Path, code: int = 0) -> tuple[LocalExecutor, Handle, Path]:
    """An attempt that prints, says it is ready, waits for the returned gate, prints, exits."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    ex = LocalExecutor()
    handle = ex.launch(make_spec(tmp_path, GATED.format(ready=str(ready), go=str(go),
                                                        code=code)))
    wait_for(ready.exists, "the command to start")
    return ex, handle, go


def recorder_of(handle: Handle) -> int:
    """The pid of the shim's recorder: the command's parent."""
    child = int(wait_for(lambda: (Path(handle.run_dir) / "child.pid").exists() and
                         (Path(handle.run_dir) / "child.pid").read_text(), "child.pid"))
    fields = shim.stat_fields(child)
    assert fields is not None
    return int(fields[1])


def kill_9(ex: LocalExecutor, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not shim.is_running(pid), f"pid {pid} to die")


@pytest.mark.parametrize("code", [0, 4])
def test_a_command_whose_shim_was_killed_keeps_its_own_exit_code(tmp_path: Path,
                                                                 code: int) -> None:
    ex, handle, go = gated_attempt(tmp_path, code)
    kill_9(ex, handle.pid)
    assert ex.poll(handle) is None and LocalExecutor().adopt(handle)  # still running
    go.touch()
    outcome = outcome_of(ex, handle)
    assert (outcome.exit_code, outcome.lost, outcome.reason) == (code, False, "")
    assert LocalExecutor().poll(handle) == outcome
    assert ex.read_log(handle.log_path).split() == [b"before", b"after"]  # output kept flowing


def test_a_lost_recorder_and_shim_make_an_unknown_outcome_not_a_failure(tmp_path: Path) -> None:
    ex, handle, go = gated_attempt(tmp_path)
    recorder = recorder_of(handle)
    kill_9(ex, recorder)  # the shim alone is left: it copies the output from then on
    go.touch()
    outcome = outcome_of(ex, handle)
    assert outcome.lost and outcome.exit_code is None and outcome.unknown, outcome
    assert outcome.reason.startswith(SUPERVISOR_LOST) and shim.SUPERVISOR_LOST == SUPERVISOR_LOST
    assert b"after" in ex.read_log(handle.log_path)
    ex2, handle2, go2 = gated_attempt(tmp_path / "both")
    recorder = recorder_of(handle2)
    kill_9(ex2, handle2.pid)
    kill_9(ex2, recorder)
    go2.touch()
    outcome = outcome_of(ex2, handle2)
    assert outcome.unknown and outcome.exit_code is None, outcome
    assert LocalExecutor().poll(handle2) == outcome


def test_kill_after_the_shim_died_is_recorded_as_sigkill(tmp_path: Path) -> None:
    ex, handle, _ = gated_attempt(tmp_path)
    kill_9(ex, handle.pid)
    ex.kill(handle)
    outcome = outcome_of(ex, handle)
    assert outcome.exit_code == -signal.SIGKILL and not outcome.lost, outcome


# -- the log cap ----------------------------------------------------------------------------

FLOOD = """
import sys
for i in range({lines}):
    sys.stdout.write('line %07d {pad}\\n' % i)
sys.stdout.flush()
print('the end', file=sys.stderr)
"""


def test_a_flood_of_output_keeps_head_and_tail_under_the_cap(tmp_path: Path) -> None:
    cap = 64 * 1024
    ex = LocalExecutor(log_cap=cap)
    lines = 50_000
    handle = ex.launch(make_spec(tmp_path, FLOOD.format(lines=lines, pad="€é" * 4)))
    assert outcome_of(ex, handle).exit_code == 0
    log = Path(handle.log_path).read_bytes()
    assert len(log) <= cap + 1024, len(log)
    assert log.startswith(b"line 0000000 ")
    assert log.endswith(b"the end\n")
    assert f"line {lines - 1:07d}".encode() in log[-cap // 2:]
    assert b"half of its log cap" in log
    dropped = [line for line in log.split(b"\n") if b"were dropped here" in line]
    assert len(dropped) == 1, dropped
    assert int(dropped[0].split(b"[gpupool: ")[1].split()[0]) > 1_000_000
    log.decode("utf-8")  # the cuts split no character
    assert not (Path(handle.run_dir) / "output.tail").exists()
    again = ex.launch(make_spec(tmp_path, "print('second attempt')", name="a2"))
    assert outcome_of(ex, again).exit_code == 0  # the cap is per attempt


def test_the_log_cap_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUPOOL_LOG_CAP_MIB", raising=False)
    assert LocalExecutor().log_cap == 100 << 20
    monkeypatch.setenv("GPUPOOL_LOG_CAP_MIB", "0.5")
    assert LocalExecutor().log_cap == 512 << 10
    monkeypatch.setenv("GPUPOOL_LOG_CAP_MIB", "lots")
    with pytest.raises(ValueError, match="GPUPOOL_LOG_CAP_MIB"):
        LocalExecutor()


def test_log_reads_never_cut_a_character(tmp_path: Path) -> None:
    text = "aé€😀b" * 40
    data = text.encode()
    path = tmp_path / "log"
    path.write_bytes(data)
    for offset in range(len(data) + 2):
        for limit in (1, 2, 3, 5, 8, 64):
            chunk, end, size = read_text(str(path), offset, limit)
            assert "\ufffd" not in chunk and size == len(data)
            raw = read_range(str(path), offset, limit)
            assert data[offset:offset + len(raw)] == raw
            stop = offset + len(raw)
            assert stop >= len(data) or not 0x80 <= data[stop] < 0xC0, (offset, limit)
    for limit in (1, 4, 7):
        pieces, offset = [], 0
        while True:
            chunk, offset, _ = read_text(str(path), offset, limit)
            if not chunk:
                break
            pieces.append(chunk)
        assert "".join(pieces) == text
    path.write_bytes(data + "€".encode()[:2])  # a character still being written
    chunk, end, _ = read_text(str(path), len(data) - 1, 64)
    assert chunk == "b" and end == len(data)
    chunk, end, _ = read_text(str(path), len(data) - 1, 64, final=True)
    assert end == len(data) + 2  # the job ended: nothing will complete it
    path.write_bytes(data + "€".encode()[:2])
    assert read_text(str(path), len(data), 64) == ("", len(data), len(data) + 2)  # wait for it
    assert read_range(str(path), len(data), 64) == b""
