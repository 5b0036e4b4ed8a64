"""GPU shares enforced by the interposer, through a real `gpupool up` (issue 8, server side):
the job's env, its share file, what the API and `describe` report, and the cleanup."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpupool.interposer.build import find_compiler
from server_harness import Server, make_server, submit, wait_for

PY = sys.executable

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or find_compiler() is None,
    reason="the interposer needs Linux and a C compiler (none found: $CC, cc, gcc, clang)",
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path, "1xA100-80GB")


def wait_then_env(go: Path) -> str:
    """Print the job's sharing env, then block until ``go`` exists."""
    return (
        "import os,time,pathlib\n"
        "keys=('LD_PRELOAD','GPUPOOL_SHARE_FILE','GPUPOOL_SHARE_LIMIT_FILE',"
        "'GPUPOOL_GPU_MEMORY_LIMIT_MIB')\n"
        "print({k: os.environ.get(k) for k in keys}, flush=True)\n"
        f"p=pathlib.Path({str(go)!r})\n"
        "while not p.exists(): time.sleep(0.05)\n"
    )



def test_share_is_enforced_by_the_interposer_and_cleaned_up(
    server: Server, tmp_path: Path
) -> None:
    out = (server.home / "server.out").read_text()
    assert "GPU shares enforced by the interposer" in out, out
    go = tmp_path / "go"
    with server.client() as c:
        assert c.get("/nodes").json()[0]["mechanisms"] == ["interposer"]
        job = submit(c, command=[PY, "-c", wait_then_env(go)], gpus=0.25)
        view = wait_for(lambda: (v := c.get(f"/jobs/{job}").json())["phase"] == "running" and v)
        assert view["enforcement"] == "interposer"
        assert view["gpu_memory_limit_mib"] == 20480
        log = wait_for(lambda: c.get(f"/jobs/{job}/logs").json()["data"])
        env = eval(log.strip().splitlines()[-1])  # the dict the job printed
        assert "libgpushare.so" in env["LD_PRELOAD"]
        share = Path(env["GPUPOOL_SHARE_FILE"])
        share_dir = server.work_dir / "shares" / job / str(view["attempts"])
        assert share.parent == share_dir and share.is_file()  # the job's ledger ...
        limit = Path(env["GPUPOOL_SHARE_LIMIT_FILE"])  # ... beside the limit it cannot change
        assert limit.parent == share_dir and limit.read_text() == f"{20480 << 20}\n"
        assert env["GPUPOOL_GPU_MEMORY_LIMIT_MIB"] == "20480"

        described = subprocess.run(
            [PY, "-m", "gpupool.cli.main", "describe", job],
            env=server.env, capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        line = next(x for x in described.splitlines() if x.startswith("enforcement"))
        assert "interposer" in line and "20480 MiB" in line and "0.25" in line, described
        nodes = subprocess.run(
            [PY, "-m", "gpupool.cli.main", "nodes"],
            env=server.env, capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        assert "interposer" in nodes, nodes

        go.touch()
        wait_for(lambda: c.get(f"/jobs/{job}").json()["phase"] == "succeeded")
        wait_for(lambda: not share.exists())

        whole = submit(c, command=[PY, "-c", "print('whole')"], gpus=1)
        wait_for(lambda: c.get(f"/jobs/{whole}").json()["phase"] == "succeeded")
        assert c.get(f"/jobs/{whole}").json()["enforcement"] == "whole GPU"
        cpu = submit(c, command=[PY, "-c", "print('cpu')"])
        wait_for(lambda: c.get(f"/jobs/{cpu}").json()["phase"] == "succeeded")
        assert c.get(f"/jobs/{cpu}").json()["enforcement"] is None


def test_without_the_interposer_shares_say_they_are_not_enforced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")  # the server cannot build the interposer
    monkeypatch.setenv("GPUPOOL_INTERPOSER_BUILD", "always")  # nor use the installed one
    servers = make_server("sqlite", tmp_path, "1xA100-80GB")
    server = next(servers)
    try:
        out = (server.home / "server.out").read_text()
        assert "GPU shares NOT enforced (interposer unavailable: no C compiler" in out, out
        with server.client() as c:
            assert c.get("/nodes").json()[0]["mechanisms"] == []
            command = [PY, "-c", "import os; print(os.environ.get('LD_PRELOAD'))"]
            job = submit(c, command=command, gpus=0.5)
            wait_for(lambda: c.get(f"/jobs/{job}").json()["phase"] == "succeeded")
            view = c.get(f"/jobs/{job}").json()
            assert view["enforcement"].startswith("none (interposer unavailable: no C compiler")
            assert "libgpushare" not in c.get(f"/jobs/{job}/logs").json()["data"]
    finally:
        servers.close()
