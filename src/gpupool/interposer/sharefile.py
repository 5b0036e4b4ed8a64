"""A job's share file: the memory ledger the interposer keeps across the job's processes.

The node side creates one file per job and node before the job starts (:func:`create`),
points the job's processes at it (``GPUPOOL_SHARE_FILE``), may read it while the job runs
(:func:`usage`) and deletes it when the job ends (:func:`remove`), which releases all the
job's accounting whether or not its processes were killed. The layout (version 1) is the one
of ``struct gs_share`` in gpushare.h: a 256-byte header, then 256 records of
``pid, reserved, start_time, bytes[16]``. The limit written here bounds the job's: a process
may narrow it through its environment, never widen it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from pathlib import Path

MAGIC = b"GPUSHR1\0"
VERSION = 1
MAX_DEVS = 16
MAX_PROCS = 256
HEADER_SIZE = 256
_HEADER = struct.Struct("<8sIIIIQ")  # magic, version, mutex_ready, max_devs, max_procs, limit
_RECORD = struct.Struct(f"<iIQ{MAX_DEVS}Q")  # pid, reserved, start_time, bytes per device
FILE_SIZE = HEADER_SIZE + MAX_PROCS * _RECORD.size
MIB = 1 << 20


def create(path: Path | str, limit_mib: int = 0, mode: int = 0o600) -> Path:
    """Write a fresh share file at ``path`` (atomically: a file already there is replaced, and
    processes still attached to it keep the old one). ``limit_mib`` is the per-GPU limit it
    enforces on top of the environment's (0: only the environment's). Raises ValueError for a
    negative limit, OSError if the directory is not writable."""
    _check(limit_mib)
    header = _HEADER.pack(MAGIC, VERSION, 0, MAX_DEVS, MAX_PROCS, limit_mib * MIB)
    return _replace(Path(path), header + bytes(FILE_SIZE - len(header)), mode)


def write_limit(path: Path | str, limit_mib: int) -> Path:
    """Write the per-GPU limit file (bytes as decimal text, mode 0644) the interposer reads
    from ``GPUPOOL_SHARE_LIMIT_FILE``: kept where the job may read it but not change it (the
    share file itself is the job's to write: it holds the job's ledger)."""
    _check(limit_mib)
    return _replace(Path(path), f"{limit_mib * MIB}\n".encode(), 0o644)


def _check(limit_mib: int) -> None:
    if limit_mib < 0:
        raise ValueError(f"limit_mib must be >= 0, got {limit_mib}")


def _replace(target: Path, data: bytes, mode: int) -> Path:
    """Atomically replace ``target`` with a file of ``data`` and ``mode``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def remove(path: Path | str) -> None:
    """Delete the share file; nothing happens if it is already gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def usage(path: Path | str) -> dict[int, list[int]]:
    """Bytes in use per device ordinal, by pid, of the job's processes that still run (a
    record of a process that is gone, or a zombie, or whose pid was recycled, is left out).
    Read without the lock: a snapshot, good for reports. Raises ValueError if the file is not
    a share file of this version, FileNotFoundError if there is none."""
    return {pid: per_dev for pid, start_time, per_dev in records(path)
            if _alive(pid, start_time)}


def records(path: Path | str) -> list[tuple[int, int, list[int]]]:
    """Every record in use, ``(pid, start time, bytes per device ordinal)``, whether its
    process still runs or not. The pid is the one the process has in its own pid namespace
    (a sandboxed job's differ from the host's); the start time is the kernel's (clock ticks
    after boot, the same in every namespace). Raises as :func:`usage`."""
    data = Path(path).read_bytes()
    if len(data) < FILE_SIZE:
        raise ValueError(f"{path}: {len(data)} bytes, a share file has {FILE_SIZE}")
    magic, version, _, devs, procs, _ = _HEADER.unpack_from(data)
    if (magic, version, devs, procs) != (MAGIC, VERSION, MAX_DEVS, MAX_PROCS):
        raise ValueError(f"{path}: not a gpushare share file of version {VERSION}")
    found = []
    for i in range(MAX_PROCS):
        pid, _, start_time, *per_dev = _RECORD.unpack_from(data, HEADER_SIZE + i * _RECORD.size)
        if pid:
            found.append((int(pid), int(start_time), list(per_dev)))
    return found


def used_bytes(path: Path | str) -> list[int]:
    """The job's bytes in use per device ordinal (the sum of :func:`usage`)."""
    totals = [0] * MAX_DEVS
    for per_dev in usage(path).values():
        totals = [a + b for a, b in zip(totals, per_dev, strict=True)]
    return totals


def limit_bytes(path: Path | str) -> int:
    """The per-GPU limit written in the file (0: none)."""
    with open(path, "rb") as f:
        return int(_HEADER.unpack(f.read(_HEADER.size))[5])


def _alive(pid: int, start_time: int) -> bool:
    """The same test as the interposer's: running, not a zombie, same start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0] not in (b"Z", b"X") and int(fields[19]) == start_time
