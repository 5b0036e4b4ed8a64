"""Processes and memory of the notebook benchmark (bench/notebook_bench.py), read from /proc:
which processes are a server's notebooks, how much memory they and the machine use, how much
CPU a process spent, and killing the notebooks a server left behind."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status; 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _rollup_kb(pid: int) -> dict[str, int]:
    """The kB fields of /proc/<pid>/smaps_rollup (Pss: shared pages divided among their
    users; Pss_Anon: of it, anonymous memory, the heap and stacks, which no file backs);
    empty when gone."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return fields


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (its waited-for children included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(f) for f in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def process_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of every process readable now."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), [a for a in argv if a])
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, list[str]]]) -> set[int]:
    """``roots`` and every process below them in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def notebook_processes(home: Path) -> dict[str, list[int]]:
    """The processes of this server's workloads: ``trees`` (each shim, the sandbox and all
    below it: Jupyter and its kernels), ``jupyter`` (the JupyterLab servers alone) and
    ``kernels``. Found by the shims' argv, which names the run directory under ``home``, so
    that notebooks of other servers on the machine are never counted."""
    table = process_table()
    mark = str(home / "runs") + "/"
    roots = {pid for pid, (_, argv) in table.items() if any(mark in a for a in argv)}
    tree = descendants(roots, table)

    def runs(pid: int, module: str) -> bool:
        argv = table[pid][1]
        return len(argv) >= 3 and argv[1:3] == ["-m", module]

    return {"trees": sorted(tree),
            "jupyter": sorted(p for p in tree if runs(p, "jupyterlab")),
            "kernels": sorted(p for p in tree if any("ipykernel" in a for a in table[p][1]))}


def memory_used_mib() -> float:
    """MemTotal - MemAvailable of the machine."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def memory_of(pids: Sequence[int]) -> dict[str, float]:
    """How many ``pids``, and their summed RSS, PSS and anonymous PSS in MiB."""
    rollups = [_rollup_kb(p) for p in pids]
    return {"count": len(pids),
            "rss_mib": sum(status_kb(p, "VmRSS") for p in pids) / 1024,
            "pss_mib": sum(r.get("Pss", 0) for r in rollups) / 1024,
            "pss_anon_mib": sum(r.get("Pss_Anon", 0) for r in rollups) / 1024}


def kill_workloads(home: Path) -> int:
    """SIGKILL every process of this server's workloads (see notebook_processes): they
    outlive the server by design. Returns how many there were."""
    pids = notebook_processes(home)["trees"]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
