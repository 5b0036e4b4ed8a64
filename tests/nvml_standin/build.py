"""Build the stand-in ``libnvidia-ml.so.1`` (nvml_standin.c) and write the state it reports.

A process loads it through ``LD_LIBRARY_PATH`` (pynvml opens ``libnvidia-ml.so.1`` by that
name) and reads its GPUs and their processes from the file named by ``STATE_ENV``, again at
every call: :class:`StandinState` rewrites that file atomically while a server runs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from gpupool.interposer import build

HERE = Path(__file__).resolve().parent
STATE_ENV = "GPUPOOL_NVML_STANDIN_STATE"
LIB_NAME = "libnvidia-ml.so.1"


def build_standin(out: Path) -> Path:
    """Compile the stand-in into ``out``/libnvidia-ml.so.1; returns ``out`` (the folder to
    put on ``LD_LIBRARY_PATH``). RuntimeError without a C compiler, AssertionError with the
    compiler's message when it fails."""
    cc = build.find_compiler()
    if cc is None:
        raise RuntimeError("no C compiler (install gcc or set CC)")
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*cc, "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         f"-Wl,-soname,{LIB_NAME}", "-o", str(out / LIB_NAME), str(HERE / "nvml_standin.c")],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"compiling the NVML stand-in failed:\n{done.stderr}")
    return out


@dataclass
class Card:
    """One GPU as the stand-in reports it (memory in MiB, utilisation in %)."""

    name: str = "NVIDIA H200"
    total_mib: int = 143771
    used_mib: int = 0
    util: int = 0
    procutil: bool = True


@dataclass
class Proc:
    """One process on a card: host pid, its memory (None: NVML says "not available") and
    its SM utilisation in %."""

    pid: int
    gpu: int
    used_mib: int | None = 0
    sm: int = 0


@dataclass
class StandinState:
    """The stand-in's state file: ``write()`` after changing ``cards`` or ``procs``."""

    path: Path
    cards: list[Card] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"gpu {i} name {c.name} total_mib {c.total_mib} used_mib {c.used_mib} "
                 f"util {c.util}" + ("" if c.procutil else " procutil off")
                 for i, c in enumerate(self.cards)]
        lines += [f"proc {p.pid} gpu {p.gpu} used_mib "
                  f"{'na' if p.used_mib is None else p.used_mib} sm {p.sm}" for p in self.procs]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Replace the file atomically (a reader sees the old state or the new one)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self.text())
        os.replace(tmp, self.path)

    def env(self, lib_dir: Path) -> dict[str, str]:
        """What a process needs in its environment to load the stand-in with this state."""
        return {"LD_LIBRARY_PATH": str(lib_dir), STATE_ENV: str(self.path)}
