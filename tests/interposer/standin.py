"""Build the stand-in driver (libcuda.so.1, libnvidia-ml.so.1) and the probe programs, and run
probes under the interposer. Shared by tests/test_interposer.py and bench/interposer_bench.py.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gpupool.interposer import build

HERE = Path(__file__).resolve().parent
WARNINGS = ("-Wall", "-Wextra", "-Werror")


@dataclass(frozen=True)
class Tools:
    """What :func:`build_tools` made: the interposer, the stand-in libraries' folder, and the
    probe built two ways (dlopen + dlsym / cuGetProcAddress, or linked against libcuda)."""

    lib: Path
    dir: Path
    probe: Path
    probe_linked: Path

    def env(self, base: Mapping[str, str] | None = None, preload: bool = True,
            **extra: str) -> dict[str, str]:
        """A clean environment: the stand-ins on the library path, the interposer preloaded
        (unless not ``preload``), then ``base`` and ``extra``."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LD_LIBRARY_PATH": str(self.dir)}
        if preload:
            env["LD_PRELOAD"] = str(self.lib)
        env.update(base or {})
        env.update(extra)
        return env

    def run(self, *ops: object, linked: bool = False, preload: bool = True,
            env: Mapping[str, str] | None = None, **extra: str) -> list[list[str]]:
        """Run one probe to the end; its output lines, split. Fails on a non-zero exit."""
        done = subprocess.run(
            [str(self.probe_linked if linked else self.probe), *map(str, ops)],
            env=self.env(env, preload, **extra), capture_output=True, text=True, timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"probe {ops} exited {done.returncode}: {done.stderr}")
        return [line.split() for line in done.stdout.splitlines()]


def _cc(cc: list[str], *args: str | Path) -> None:
    done = subprocess.run([*cc, *map(str, args)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"compiling failed: {' '.join(map(str, args))}\n{done.stderr}")


def build_tools(out: Path) -> Tools:
    """Compile everything into ``out`` (the interposer through gpupool's own build)."""
    cc = build.find_compiler()
    if cc is None:
        raise RuntimeError("no C compiler")
    lib = build.build(out / "lib")
    inc = f"-I{build.source_dir()}"
    _cc(cc, "-O2", *WARNINGS, "-shared", "-fPIC", "-Wl,-Bsymbolic", "-Wl,-soname,libcuda.so.1",
        inc, "-o", out / "libcuda.so.1", HERE / "standin_cuda.c")
    _cc(cc, "-O2", *WARNINGS, "-shared", "-fPIC", "-Wl,-soname,libnvidia-ml.so.1", inc,
        "-o", out / "libnvidia-ml.so.1", HERE / "standin_nvml.c")
    _cc(cc, "-O2", *WARNINGS, inc, "-o", out / "probe", HERE / "probe.c", "-ldl", "-lpthread")
    _cc(cc, "-O2", *WARNINGS, "-DPROBE_LINKED", inc, "-o", out / "probe_linked",
        HERE / "probe.c", "-ldl", "-lpthread", f"-L{out}", "-l:libcuda.so.1",
        f"-Wl,-rpath,{out}")
    return Tools(lib, out, out / "probe", out / "probe_linked")
