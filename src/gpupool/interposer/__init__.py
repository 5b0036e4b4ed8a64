"""gpupool's GPU-sharing interposer: a C library LD_PRELOADed into a job's processes.

It limits the job's device memory per GPU (``GPUPOOL_GPU_MEMORY_LIMIT_MIB``, counted across
all the job's processes through a share file the node side owns) and paces kernel launches to
the job's compute share (``GPUPOOL_GPU_FRACTION``). See docs/design/gpu-sharing.md.

- :mod:`gpupool.interposer.build` compiles the shipped C source into ``libgpushare.so``;
- :mod:`gpupool.interposer.sharefile` creates, reads and removes a job's share file;
- :func:`job_env` is the environment a job's process needs on top of its launch env.

Standard library only: the server, the executors and the CLI may all use it.
"""

from __future__ import annotations

import os
from pathlib import Path

PRELOAD_ENV = "LD_PRELOAD"
SHARE_FILE_ENV = "GPUPOOL_SHARE_FILE"
LIMIT_FILE_ENV = "GPUPOOL_SHARE_LIMIT_FILE"


def job_env(
    library: Path | str, share_file: Path | str, ld_preload: str | None = None,
    limit_file: Path | str | None = None,
) -> dict[str, str]:
    """``LD_PRELOAD`` with the interposer first (before what ``ld_preload`` already held),
    ``GPUPOOL_SHARE_FILE`` and, with ``limit_file``, ``GPUPOOL_SHARE_LIMIT_FILE``; merge
    into the job's env after :func:`launch_env`'s variables, which carry the limits
    (``GPUPOOL_GPU_MEMORY_LIMIT_MIB``, ``GPUPOOL_GPU_FRACTION``)."""
    lib = os.fspath(library)
    rest = [p for p in (ld_preload or "").replace(":", " ").split() if p != lib]
    env = {PRELOAD_ENV: " ".join([lib, *rest]), SHARE_FILE_ENV: os.fspath(share_file)}
    if limit_file is not None:
        env[LIMIT_FILE_ENV] = os.fspath(limit_file)
    return env
