"""CUDA MPS control daemons, one per card gpupool shares with MPS.

Each card gets its own pipe and log directory under ``base_dir`` (``gpu<N>/pipe``,
``gpu<N>/log``); its daemon is started with ``CUDA_VISIBLE_DEVICES=<N>`` and
``nvidia-cuda-mps-control -d``, and stopped with ``quit`` on the control pipe. A client (the
job) reaches it through ``CUDA_MPS_PIPE_DIRECTORY``; the daemon re-numbers the card as
device 0 for its clients, so the job gets ``CUDA_VISIBLE_DEVICES=0``.

Verified against a stand-in ``nvidia-cuda-mps-control`` only (tests/test_sharing_mps.py):
no NVIDIA driver was available.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger("gpupool.sharing.mps")

CONTROL = "nvidia-cuda-mps-control"
PID_FILE = "nvidia-cuda-mps-control.pid"
"""Written by the control daemon into its pipe directory (NVIDIA's MPS documentation)."""
START_TIMEOUT_S = 15.0


class MpsError(RuntimeError):
    """A control daemon that could not be started; the message says why."""


def find_control(configured: str = "") -> tuple[str | None, str]:
    """(path of ``nvidia-cuda-mps-control``, "") or (None, why not). ``configured`` (a path,
    e.g. from GPUPOOL_MPS_CONTROL) wins over PATH."""
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path), ""
        return None, f"{configured} (GPUPOOL_MPS_CONTROL) is not an executable file"
    found = shutil.which(CONTROL)
    if found:
        return found, ""
    return None, f"{CONTROL} not found on PATH (or set GPUPOOL_MPS_CONTROL)"


class MpsDaemons:
    """The control daemons of this server, started lazily per card and stopped by
    :meth:`stop_all`. A daemon found alive in a card's pipe directory (left by an earlier
    server run) is adopted rather than started twice. Thread-safe."""

    def __init__(self, control: str, base_dir: Path) -> None:
        self.control = control
        self.base_dir = base_dir
        self._running: set[int] = set()
        self._lock = threading.Lock()

    def pipe_dir(self, card: int) -> Path:
        return self.base_dir / f"gpu{card}" / "pipe"

    def log_dir(self, card: int) -> Path:
        return self.base_dir / f"gpu{card}" / "log"

    def client_env(self, card: int) -> dict[str, str]:
        """What a job's process needs to be a client of the card's daemon."""
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir(card)),
                "CUDA_MPS_LOG_DIRECTORY": str(self.log_dir(card)),
                "CUDA_VISIBLE_DEVICES": "0"}

    def running(self) -> list[int]:
        with self._lock:
            return sorted(self._running)

    def ensure(self, card: int) -> Path:
        """The card's pipe directory with a live daemon behind it, starting one if needed.
        Raises MpsError saying why it could not (the daemon's own output included)."""
        with self._lock:
            if card in self._running and self._alive(card):
                return self.pipe_dir(card)
            pipe, logs = self.pipe_dir(card), self.log_dir(card)
            if self._alive(card):
                log.info("MPS: adopting the control daemon already running for GPU %d", card)
                self._running.add(card)
                return pipe
            try:
                pipe.mkdir(parents=True, exist_ok=True)
                logs.mkdir(parents=True, exist_ok=True)
                # clients run as their owners' accounts: they must reach the pipe dir
                for folder in (self.base_dir, pipe.parent, pipe):
                    os.chmod(folder, 0o755)
            except OSError as exc:
                raise MpsError(f"cannot create {pipe}: {exc.strerror}") from None
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(card),
                   "CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logs)}
            try:
                done = subprocess.run([self.control, "-d"], env=env, capture_output=True,
                                      text=True, timeout=START_TIMEOUT_S, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise MpsError(f"{self.control} -d for GPU {card} failed: {exc}") from None
            if done.returncode != 0:
                said = " ".join((done.stderr or done.stdout).split())[:120] or "no output"
                raise MpsError(f"{self.control} -d for GPU {card} exited with "
                               f"{done.returncode}: {said}")
            deadline = time.monotonic() + START_TIMEOUT_S
            while not self._alive(card):
                if time.monotonic() > deadline:
                    raise MpsError(f"the MPS control daemon for GPU {card} did not come up "
                                   f"(no live pid in {pipe / PID_FILE})")
                time.sleep(0.05)
            log.info("MPS: control daemon started for GPU %d (pipe dir %s)", card, pipe)
            self._running.add(card)
            return pipe

    def stop_all(self) -> list[str]:
        """Ask every daemon of this server to quit (``echo quit | nvidia-cuda-mps-control``
        with its pipe dir); the daemon stops its servers once their clients are done. Returns
        the problems met (empty: all asked); never raises."""
        problems = []
        with self._lock:
            cards, self._running = sorted(self._running), set()
        for card in cards:
            env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir(card)),
                   "CUDA_MPS_LOG_DIRECTORY": str(self.log_dir(card))}
            try:
                done = subprocess.run([self.control], input="quit\n", env=env,
                                      capture_output=True, text=True, timeout=30, check=False)
                if done.returncode != 0:
                    problems.append(f"GPU {card}: quit exited with {done.returncode}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                problems.append(f"GPU {card}: {exc}")
        for problem in problems:
            log.warning("MPS: cannot stop a control daemon: %s", problem)
        return problems

    def _alive(self, card: int) -> bool:
        """A daemon whose pid (from its pid file) is a live process."""
        try:
            pid = int((self.pipe_dir(card) / PID_FILE).read_text().split()[0])
            os.kill(pid, 0)
        except PermissionError:  # alive, another user's (e.g. root's) daemon
            return True
        except (OSError, ValueError, IndexError):
            return False
        return True
