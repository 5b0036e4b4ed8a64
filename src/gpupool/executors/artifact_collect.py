"""Running the artifact packer (:mod:`gpupool.executors.artifact_pack`) as a job's account on
this machine: the server for its own nodes, a Ray node's agent for its own."""

from __future__ import annotations

import functools
import os
import subprocess

from gpupool.executors import accounts, artifact_pack
from gpupool.executors.interpreter import job_python

OVER_LIMIT = artifact_pack.OVER_LIMIT


@functools.cache
def _source() -> str:
    with open(artifact_pack.__file__) as f:
        return f.read()


def pack_as(unix_user: str | None, base: str, paths: list[str] | tuple[str, ...], limit: int,
            out: str) -> tuple[int, str]:
    """Pack ``paths`` (relative to ``base``) into the new file ``out`` (0600, this process's)
    as ``unix_user`` (None, or a server that is not root: as this process); (the packer's
    exit code, its last stderr line: the JSON summary on success). A result larger than
    ``limit`` plus slack counts as over the limit whatever the packer said (its count is the
    job's account's to fake)."""
    options: dict[str, object] = {}
    if unix_user and accounts.isolating():
        account = accounts.lookup(unix_user)
        options = {"user": account.uid, "group": account.gid, "extra_groups": []}
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as sink:
        # the file is this process's: the packer writes to its stdout, never to a path
        done = subprocess.run(  # type: ignore[call-overload]
            [job_python(), "-I", "-c", _source(), base, str(limit), *paths], stdout=sink,
            stderr=subprocess.PIPE, text=True, timeout=3600, check=False, cwd="/",
            env={"PATH": "/usr/bin:/bin"}, **options)
    if os.stat(out).st_size > limit + (16 << 20):
        return OVER_LIMIT, "the archive is larger than the limit"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, (lines[-1] if lines else "")
