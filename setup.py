"""Build hook: compile the GPU-sharing interposer (``libgpushare.so``) during the package's
normal install, from the C source shipped in ``gpupool/interposer``, with this machine's C
compiler. Never fails the install: without a compiler the library is left out, and
``gpupool up`` says so (and tries again to build it under the data dir).

Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _interposer_build_module():  # type: ignore[no-untyped-def]
    """gpupool/interposer/build.py, loaded on its own (stdlib only; the package and its
    dependencies need not be importable yet)."""
    path = HERE / "src" / "gpupool" / "interposer" / "build.py"
    spec = importlib.util.spec_from_file_location("_gpupool_interposer_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class BuildPyWithInterposer(build_py):
    """build_py, then the interposer into ``gpupool/interposer/lib`` (in the source tree for
    editable installs, in the build tree otherwise)."""

    def run(self) -> None:
        super().run()
        builder = _interposer_build_module()
        if getattr(self, "editable_mode", False):
            out = HERE / "src" / "gpupool" / "interposer" / "lib"
        else:
            out = Path(self.build_lib) / "gpupool" / "interposer" / "lib"
        try:
            built = builder.build(out)
        except builder.BuildError as exc:
            print(f"gpupool: GPU-sharing interposer not built: {exc}", file=sys.stderr)
        else:
            print(f"gpupool: GPU-sharing interposer built: {built}", file=sys.stderr)


setup(cmdclass={"build_py": BuildPyWithInterposer})
