"""GPU shares under CUDA MPS (issue 8, mechanism 2), driven through a real `gpupool up` with
fake GPUs and a STAND-IN `nvidia-cuda-mps-control` (this machine has no NVIDIA driver): a
small script written by the test that records how it is called, and on `-d` starts a
sleeping "daemon" and writes its pid file into the pipe directory, as the real one does.
What this shows: when gpupool starts a daemon (lazily, once per card, with the card and its
own pipe/log dirs), what a job's environment and `enforcement` say, the fallback to the
interposer when a daemon cannot start, and that the server stops its daemons."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpupool.interposer.build import find_compiler
from gpupool.server.sharing import MpsDaemons, MpsError
from server_harness import Server, make_server, submit, wait_for

PY = sys.executable
PID_FILE = "nvidia-cuda-mps-control.pid"

STANDIN = """#!{python}
# Stand-in for nvidia-cuda-mps-control (tests only).
import json, os, signal, subprocess, sys
from pathlib import Path
pipe = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
entry = {{"argv": sys.argv[1:], "card": os.environ.get("CUDA_VISIBLE_DEVICES"),
          "pipe": str(pipe), "log": os.environ.get("CUDA_MPS_LOG_DIRECTORY")}}
code = 0
if sys.argv[1:] == ["-d"]:
    if entry["card"] in os.environ.get("STANDIN_MPS_FAIL", "").split(","):
        print("standin: cannot start on this GPU", file=sys.stderr)
        code = 3
    else:
        pipe.mkdir(parents=True, exist_ok=True)
        daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                  start_new_session=True, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (pipe / "{pid_file}").write_text(f"{{daemon.pid}}\\n")
        entry["pid"] = daemon.pid
else:
    entry["stdin"] = sys.stdin.read().split()
    pid_file = pipe / "{pid_file}"
    if "quit" in entry["stdin"] and pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()
with open(os.environ["STANDIN_MPS_RECORD"], "a") as f:
    f.write(json.dumps(entry) + "\\n")
sys.exit(code)
"""


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The stand-in binary; its calls are recorded in ``STANDIN_MPS_RECORD``. Any "daemon"
    it left running is killed afterwards."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    control = bindir / "nvidia-cuda-mps-control"
    control.write_text(STANDIN.format(python=PY, pid_file=PID_FILE))
    control.chmod(0o755)
    record = tmp_path / "mps-calls.jsonl"
    monkeypatch.setenv("STANDIN_MPS_RECORD", str(record))
    yield control
    for call in calls(record):
        if "pid" in call:
            with contextlib.suppress(OSError):
                os.kill(call["pid"], 9)


def calls(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- the daemons on their own -------------------------------------------------------------


def test_daemon_starts_once_per_card_is_adopted_after_restart_and_stops(
    standin: Path, tmp_path: Path
) -> None:
    record = Path(os.environ["STANDIN_MPS_RECORD"])
    daemons = MpsDaemons(str(standin), tmp_path / "mps")
    pipe = daemons.ensure(2)
    assert pipe == tmp_path / "mps" / "gpu2" / "pipe"
    assert daemons.ensure(2) == pipe  # alive: not started again
    [start] = calls(record)
    assert start["argv"] == ["-d"] and start["card"] == "2"
    assert start["pipe"] == str(pipe) and start["log"] == str(tmp_path / "mps" / "gpu2" / "log")
    assert daemons.client_env(2) == {"CUDA_MPS_PIPE_DIRECTORY": str(pipe),
                                     "CUDA_MPS_LOG_DIRECTORY": start["log"],
                                     "CUDA_VISIBLE_DEVICES": "0"}

    again = MpsDaemons(str(standin), tmp_path / "mps")  # a server restart
    assert again.ensure(2) == pipe and len(calls(record)) == 1  # adopted, not restarted
    assert again.running() == [2]
    assert again.stop_all() == []
    quit_call = calls(record)[-1]
    assert quit_call["stdin"] == ["quit"] and quit_call["pipe"] == str(pipe)
    wait_for(lambda: not alive(start["pid"]), timeout=10)
    assert again.running() == [] and again.stop_all() == []  # nothing left to stop


def test_daemon_that_cannot_start_says_why(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_MPS_FAIL", "0")
    daemons = MpsDaemons(str(standin), tmp_path / "mps")
    with pytest.raises(MpsError, match=r"for GPU 0 exited with 3: standin: cannot start"):
        daemons.ensure(0)
    assert daemons.running() == []
    broken = MpsDaemons(str(tmp_path / "missing"), tmp_path / "mps")
    with pytest.raises(MpsError, match="-d for GPU 1 failed"):
        broken.ensure(1)


# -- through a real server ----------------------------------------------------------------


def wait_then_env(go: Path) -> str:
    keys = ("CUDA_VISIBLE_DEVICES", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "LD_PRELOAD", "GPUPOOL_LAUNCH_COST_US")
    return (
        "import os,time,pathlib\n"
        f"print({{k: os.environ.get(k) for k in {keys!r}}}, flush=True)\n"
        f"p=pathlib.Path({str(go)!r})\n"
        "while not p.exists(): time.sleep(0.05)\n"
    )



def running_env(client, job: str) -> tuple[dict[str, Any], dict[str, Any]]:  # type: ignore[no-untyped-def]
    view = wait_for(lambda: (v := client.get(f"/jobs/{job}").json())["phase"] == "running" and v)
    log = wait_for(lambda: client.get(f"/jobs/{job}/logs").json()["data"])
    return view, eval(log.strip().splitlines()[-1])  # the dict the job printed


@pytest.mark.skipif(find_compiler() is None, reason="the interposer needs a C compiler")
def test_server_enforces_shares_with_mps_and_falls_back_when_a_daemon_fails(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = Path(os.environ["STANDIN_MPS_RECORD"])
    monkeypatch.setenv("GPUPOOL_MPS_CONTROL", str(standin))  # explicit: MPS on fake GPUs
    monkeypatch.setenv("STANDIN_MPS_FAIL", "1")  # GPU 1's daemon will not start
    servers = make_server("sqlite", tmp_path, "2xA100-80GB")
    server: Server = next(servers)
    go = tmp_path / "go"
    try:
        out = (server.home / "server.out").read_text()
        assert "GPU sharing (auto): mps, interposer offered" in out, out
        assert calls(record) == []  # lazily: no daemon before a shared job needs one
        with server.client() as c:
            assert c.get("/nodes").json()[0]["mechanisms"] == ["mps", "interposer"]
            first = submit(c, command=[PY, "-c", wait_then_env(go)], gpus=0.75)
            view, env = running_env(c, first)
            assert view["placement"]["gpus"] == [0]
            assert view["enforcement"] == (
                "mps + interposer (per GPU: 75% of SMs, 61440 MiB per process and per job)")
            pipe = server.work_dir / "mps" / "gpu0" / "pipe"  # where jobs' accounts reach
            assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(pipe)
            assert env["CUDA_VISIBLE_DEVICES"] == "0"  # the daemon's only device
            assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "75"
            assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=61440M"
            assert "libgpushare.so" in env["LD_PRELOAD"] and env["GPUPOOL_LAUNCH_COST_US"] == "0"
            [start] = calls(record)
            assert (start["argv"], start["card"], start["pipe"]) == (["-d"], "0", str(pipe))
            assert alive(start["pid"])

            # 0.5 does not fit beside 0.75: GPU 1, whose daemon fails -> the interposer.
            second = submit(c, command=[PY, "-c", wait_then_env(go)], gpus=0.5)
            view, env = running_env(c, second)
            assert view["placement"]["gpus"] == [1]
            assert view["enforcement"].startswith(
                "interposer (mps: daemon failed: "), view["enforcement"]
            assert "for GPU 1 exited with 3: standin: cannot start" in view["enforcement"]
            assert env["CUDA_MPS_PIPE_DIRECTORY"] is None and env["CUDA_VISIBLE_DEVICES"] == "1"
            assert "libgpushare.so" in env["LD_PRELOAD"] and env["GPUPOOL_LAUNCH_COST_US"] is None
            assert "MPS unavailable on GPU 1" in (server.home / "server.out").read_text()

            # Another share: card 0 keeps its daemon, card 1 is not retried.
            third = submit(c, command=[PY, "-c", wait_then_env(go)], gpus=0.25)
            view, env = running_env(c, third)
            card = view["placement"]["gpus"][0]
            assert view["enforcement"].startswith("mps + " if card == 0 else "interposer (mps: ")
            assert [(x["argv"], x["card"]) for x in calls(record)] == [(["-d"], "0"),
                                                                       (["-d"], "1")]
            described = subprocess.run(
                [PY, "-m", "gpupool.cli.main", "describe", first],
                env=server.env, capture_output=True, text=True, timeout=60, check=True,
            ).stdout
            line = next(x for x in described.splitlines() if x.startswith("enforcement"))
            assert "mps + interposer" in line and "75% of SMs" in line, described
            go.touch()
            for job in (first, second, third):
                wait_for(lambda job=job: c.get(f"/jobs/{job}").json()["phase"] == "succeeded")
        server.stop()
        stops = [x for x in calls(record) if x["argv"] == []]
        assert [(x["stdin"], x["pipe"]) for x in stops] == [(["quit"], str(pipe))]
        wait_for(lambda: not alive(start["pid"]), timeout=10)
    finally:
        go.touch()
        servers.close()


@pytest.mark.skipif(find_compiler() is None, reason="the interposer needs a C compiler")
@pytest.mark.skipif(os.geteuid() != 0, reason="jobs of two accounts need a root server")
def test_one_cards_mps_serves_one_account_at_a_time(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MPS runs one server per Unix user and makes other users' clients wait: a share of
    another account on a card whose MPS serves someone uses the interposer instead, while
    more of the same account's shares keep using MPS."""
    monkeypatch.setenv("GPUPOOL_MPS_CONTROL", str(standin))
    servers = make_server("sqlite", tmp_path, "1xA100-80GB")
    server: Server = next(servers)
    sleep = ["python3", "-c", "import time; time.sleep(120)"]
    try:
        with server.client() as c:
            made = c.post("/users", json={"name": "mpsother", "team": "default"})
            assert made.status_code == 201, made.text
            assert made.json()["unix_user"] not in (None, "root")
            other = c.post("/tokens", json={"user": "mpsother"}).json()["token"]
            mine = submit(c, command=sleep, gpus=0.5, workdir="/")
            wait_for(lambda: c.get(f"/jobs/{mine}").json()["phase"] == "running")
            assert c.get(f"/jobs/{mine}").json()["enforcement"].startswith("mps + ")
            with server.client(other) as o:
                theirs = submit(o, command=sleep, gpus=0.25, workdir="/")
                view = wait_for(lambda: (v := o.get(f"/jobs/{theirs}").json())["phase"]
                                == "running" and v)
            assert view["placement"]["gpus"] == [0]
            assert view["enforcement"].startswith(
                "interposer (mps: its MPS serves another account now)"), view["enforcement"]
            again = submit(c, command=sleep, gpus=0.25, workdir="/")
            wait_for(lambda: c.get(f"/jobs/{again}").json()["phase"] == "running")
            assert c.get(f"/jobs/{again}").json()["enforcement"].startswith("mps + ")
            for job in (mine, theirs, again):
                c.post(f"/jobs/{job}/cancel")
            for job in (mine, theirs, again):
                wait_for(lambda job=job: c.get(f"/jobs/{job}").json()["phase"] == "cancelled")
            assert c.delete("/users/mpsother").status_code == 200  # its account goes too
    finally:
        servers.close()


def test_up_refuses_an_unknown_sharing_mode(tmp_path: Path) -> None:
    env = {**os.environ, "GPUPOOL_HOME": str(tmp_path / "home"), "GPUPOOL_SHARING": "hami"}
    done = subprocess.run(
        [PY, "-m", "gpupool.cli.main", "up", "--port", "1", "--fake-gpus", "1xA100-80GB"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "is not one of auto, mig, mps, interposer, none" in done.stderr
