"""Which host processes belong to which attempt, from ``/proc``.

An attempt of the local executor is a process group led by its shim (the handle's pid,
:mod:`gpupool.executors.local`); its command runs below it, in a bubblewrap pid namespace
when sandboxed. NVML reports host pids, and ``/proc`` as the server sees it gives every
process's host pid, parent and group, so a process is an attempt's when its group is the
attempt's (what the executor signals) or when the attempt's shim is among its ancestors (a
process that left the group with ``setsid`` but still runs under the shim, e.g. the
sandbox's own init and everything it reaps).

:func:`owners` is pure (a table in, a mapping out); :func:`read_table` and
:func:`namespace_pid` read ``/proc``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K")


@dataclass(frozen=True)
class Proc:
    """One process as ``/proc/PID/stat`` tells: parent, process group, start time (clock
    ticks after boot)."""

    ppid: int
    pgid: int
    start_time: int


def owners(table: Mapping[int, Proc], roots: Mapping[int, K]) -> dict[int, K]:
    """Each pid of ``table`` that belongs to a root, with that root's key: its process group
    is a root's pid, or a root is among its ancestors (a root itself belongs to its own
    key). ``roots``: root pid → key (several roots may share a key: a job's ranks). A pid
    owned by no root is absent. Ancestry loops (a corrupt table) end the walk."""
    found: dict[int, K] = {}
    for pid, proc in table.items():
        if pid in roots:
            found[pid] = roots[pid]
            continue
        if proc.pgid in roots:
            found[pid] = roots[proc.pgid]
            continue
        seen = {pid}
        parent = proc.ppid
        while parent > 1 and parent not in seen:
            if parent in roots:
                found[pid] = roots[parent]
                break
            if parent in found:  # an ancestor already resolved
                found[pid] = found[parent]
                break
            seen.add(parent)
            above = table.get(parent)
            if above is None:
                break
            parent = above.ppid
    return found


def read_table(proc_dir: str = "/proc") -> dict[int, Proc]:
    """Every process now (zombies included: they may still hold a GPU context as NVML
    sees it for an instant); processes that vanish while read are left out."""
    table: dict[int, Proc] = {}
    for name in os.listdir(proc_dir):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc_dir}/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        try:
            table[int(name)] = Proc(int(fields[1]), int(fields[2]), int(fields[19]))
        except (IndexError, ValueError):
            continue
    return table


def namespace_pid(pid: int, proc_dir: str = "/proc") -> int | None:
    """The pid that host process ``pid`` has in its own (innermost) pid namespace (the
    ``NSpid`` line of its status: the host pid itself outside any namespace); None when it
    is gone or the kernel does not say."""
    try:
        with open(f"{proc_dir}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        return None
    return None
