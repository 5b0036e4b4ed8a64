"""What the sections of the GPU acceptance run (bench/gpu_acceptance.py) share: the way a
section says it cannot run (:class:`Skip`), probes of what this machine offers (torch with
CUDA, the MPS control binary, a container runtime), a real ``gpupool up`` to run jobs on
(:func:`pool`), and running one job to its end with its output (:func:`run_job`).

A section is a function ``run(fake_gpus: str) -> dict`` whose dict holds ``checks`` (check
name → ``"held…"``, ``"failed: why"`` or ``"skipped: why"``) and whatever figures it
measured; ``markdown`` (optional) is a paragraph or table for gpu.md. It raises
:class:`Skip` when none of it can run here, saying why.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpupool.sdk import Client
from server_harness import Server, job_reachable_dir, kill_leftover_jobs

BENCH = Path(__file__).resolve().parent
LIB_DIR = Path("/tmp/gpuacc-lib")
"""Where the interposer is built when the install did not build it (not in a section's
temporary directory: the sections share one build)."""

MARK = "GPUACC "
"""The prefix of the one JSON line the job scripts (gpu_job_memory.py, gpu_train.py) print."""


class Skip(Exception):
    """The whole section cannot run on this machine; the message says why."""


def held(ok: bool, detail: str) -> str:
    """``"held: detail"`` or ``"failed: detail"``."""
    return f"{'held' if ok else 'failed'}: {detail}"


@functools.cache
def torch_probe() -> tuple[str | None, str | None]:
    """(torch's version or None, why CUDA cannot be used or None), read in a child process
    (importing torch and CUDA here would hold a context for the whole section)."""
    code = ("import json\ntry:\n import torch\nexcept Exception as e:\n"
            " print(json.dumps([None, f'torch not importable: {e}']))\nelse:\n"
            " ok = torch.cuda.is_available()\n"
            " print(json.dumps([torch.__version__, None if ok else "
            "f'torch {torch.__version__}: CUDA not available']))\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=False)
        version, why = json.loads(done.stdout.strip().splitlines()[-1])
        return version, why
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return None, f"cannot probe torch: {exc}"


def cuda_why() -> str | None:
    """None when torch is importable here and sees a CUDA device, else why not."""
    return torch_probe()[1]


def torch_why() -> str | None:
    """None when torch is importable here (with or without CUDA), else why not."""
    version, why = torch_probe()
    return None if version else why


def inside_why(no_cuda: str | None, results: list[dict[str, Any] | None]) -> str | None:
    """Why the checks made with torch inside jobs cannot be judged, as a check's text:
    "skipped: …" when this machine has no usable torch with CUDA (``no_cuda``), "failed: …"
    when it has but a job could not use it or printed no result; None when they can."""
    if no_cuda:
        return f"skipped: {no_cuda}"
    for result in results:
        if not result:
            return "failed: a job printed no result line"
        if result.get("skipped"):
            return f"failed: inside the job: {result['skipped']} (CUDA works outside it)"
    return None


def mps_control_why() -> str | None:
    """None when ``nvidia-cuda-mps-control`` is on PATH, else why not."""
    return None if shutil.which("nvidia-cuda-mps-control") else (
        "no MPS daemon binary: nvidia-cuda-mps-control not on PATH")


def container_runtime() -> str | None:
    """podman or docker, whichever is on PATH first; None without either."""
    return next((name for name in ("podman", "docker") if shutil.which(name)), None)


def job_dir(*scripts: str) -> Path:
    """A fresh directory every account may pass (see server_harness.job_reachable_dir) with
    copies of the named bench/ scripts in it: a job's workdir."""
    path = job_reachable_dir("gpuacc-job-")
    for name in scripts:
        shutil.copy(BENCH / name, path / name)
        os.chmod(path / name, 0o644)
    return path


@dataclass
class Pool:
    """A started server and an SDK client of its admin."""

    server: Server
    client: Client

    def nodes(self) -> list[dict[str, Any]]:
        return [node.model_dump(mode="json") for node in self.client.nodes()]

    def card(self) -> dict[str, Any]:
        """The first GPU of the first node, as the API shows it."""
        return dict(self.nodes()[0]["gpus"][0])


@contextlib.contextmanager
def pool(fake_gpus: str, env: Mapping[str, str] | None = None) -> Iterator[Pool]:
    """A real ``gpupool up`` on this machine (its real GPUs through NVML, or the declared
    ``fake_gpus``), with ``env`` added to its environment (e.g. ``GPUPOOL_SHARING``); stopped,
    with its jobs killed and its files removed, on the way out."""
    home = Path(tempfile.mkdtemp(prefix="gpuacc-"))
    server = Server(home / "home", "", fake_gpus, extra_env=dict(env or {}))
    server.home.mkdir(parents=True)
    try:
        server.start()
        with Client(server.url, server.token, timeout=60) as client:
            yield Pool(server, client)
    finally:
        server.stop()
        kill_leftover_jobs(server.home)
        shutil.rmtree(server.work_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def startup_text(p: Pool) -> str:
    """What ``gpupool up`` printed at start (its sharing lines say what it offers)."""
    try:
        return (p.server.home / "server.out").read_text(errors="replace")[:4000]
    except OSError:
        return ""


def output(client: Client, job_id: str) -> str:
    """The whole output of a job that has ended."""
    text, offset = [], 0
    while True:
        chunk = client.logs(job_id, offset)
        text.append(chunk.data)
        if chunk.complete or not chunk.data:
            return "".join(text)
        offset = chunk.offset


def marked(text: str) -> dict[str, Any] | None:
    """The last ``GPUACC {json}`` line of ``text`` as a dict; None when there is none."""
    for line in reversed(text.splitlines()):
        if line.startswith(MARK):
            try:
                found = json.loads(line[len(MARK):])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def submit(client: Client, **spec: Any) -> str:
    """Submit a job; its id."""
    return str(client.submit(**spec).id)


def finish(client: Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    """Wait for a job to end; its view (as JSON) with ``output`` (its log) and ``result``
    (its ``GPUACC`` line, or None)."""
    view = client.wait(job_id, timeout=timeout).model_dump(mode="json")
    view["output"] = output(client, job_id)
    view["result"] = marked(view["output"])
    return view


def run_job(client: Client, timeout: float = 180, **spec: Any) -> dict[str, Any]:
    """Submit one job, wait for it to end: see :func:`finish`."""
    return finish(client, submit(client, **spec), timeout)


def run_script(script: str, args: list[str], env: Mapping[str, str] | None = None,
               timeout: float = 240) -> dict[str, Any]:
    """Run a bench/ job script directly (not as a job) with this process's environment
    minus gpupool's variables and ``LD_PRELOAD``, plus ``env``; its ``GPUACC`` result, or
    {"error": …} when it printed none."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("GPUPOOL_") and k != "LD_PRELOAD"}
    clean.update(env or {})
    done = subprocess.run([sys.executable, str(BENCH / script), *args], env=clean,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return marked(done.stdout) or {"error": f"exit {done.returncode}: {tail(done.stderr, 400)}"}


def tail(text: str, chars: int = 1500) -> str:
    return text if len(text) <= chars else "…" + text[-chars:]
