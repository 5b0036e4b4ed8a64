"""Trace loading: the openb node and pod CSV files (see FORMAT.md of the trace folder).

``load_nodes`` reads a node list (``sn,cpu_milli,memory_mib,gpu,model``) and ``load_pods`` a pod
list (``name,cpu_milli,memory_mib,num_gpu,gpu_milli`` plus the optional ``gpu_spec``, ``qos``,
``pod_phase``, ``creation_time``, ``deletion_time`` and ``scheduled_time``). Columns are found
by header name, so their order does not matter and unknown columns are ignored. Every problem
in a file raises ``TraceError`` naming the file, the 1-based line (the header is line 1) and the
column, so that a user can open the file at the right place. Quoting follows the csv module in
strict mode (a stray quote is an error); blank lines are skipped but still counted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gpupool.core.cluster import ClusterError, GpuSpec, NodeSpec
from gpupool.core.request import MILLI_PER_GPU, Request, RequestError


class TraceError(ValueError):
    """A malformed trace file. ``str()`` is one line naming the file, row and column."""

    def __init__(self, path: str, row: int | None, column: str | None, message: str) -> None:
        self.path, self.row, self.column, self.message = path, row, column, message
        where = path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class TracePod:
    """One task of a trace: what it asks for, and when it lived (seconds; None if unknown)."""

    request: Request
    creation_time: int | None = None
    deletion_time: int | None = None
    scheduled_time: int | None = None
    phase: str = ""


GPU_MEMORY_MIB: Final[Mapping[str, int]] = {
    "P100": 16 * 1024,
    "T4": 16 * 1024,
    "V100M16": 16 * 1024,
    "V100M32": 32 * 1024,
    "A10": 24 * 1024,
    "G1": 0,
    "G2": 0,
    "G3": 0,
}
"""Memory of one GPU per openb model, MiB. ``G1``/``G2``/``G3`` are undisclosed internal codes,
so their memory is unknown: 0, as is any model not listed here."""

NODE_COLUMNS: Final = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
"""Columns a node list must have."""

POD_COLUMNS: Final = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
"""Columns a pod list must have (the ``multigpu*`` files have only these)."""

_TIME_COLUMNS: Final = ("creation_time", "deletion_time", "scheduled_time")


def gpu_memory_mib(model: str) -> int:
    """Per-GPU memory of ``model`` in MiB from ``GPU_MEMORY_MIB``; 0 when unknown."""
    return GPU_MEMORY_MIB.get(model, 0)


def load_nodes(path: str | Path) -> list[NodeSpec]:
    """Read an openb node list into ``NodeSpec``s, in file order.

    Each node gets ``gpu`` ``GpuSpec`` entries of its ``model`` with the memory of
    ``gpu_memory_mib(model)``; nodes without GPUs get no GPUs (their ``model`` cell is ignored).
    Labels are empty and links ``None``. Raises ``TraceError`` for an unreadable or empty file, a
    missing column, a non-integer or negative number, a GPU node without a model, a repeated
    node name, or a row whose field count differs from the header's.
    """
    name = str(path)
    header, rows = _read_table(path, NODE_COLUMNS, "node list")
    i_sn, i_cpu, i_mem, i_gpu, i_model = (header[c] for c in NODE_COLUMNS)
    nodes: list[NodeSpec] = []
    seen: dict[str, int] = {}
    for line, cells in rows:
        sn = cells[i_sn].strip()
        if not sn:
            raise TraceError(name, line, "sn", "empty node name")
        if sn in seen:
            raise TraceError(name, line, "sn", f"node {sn!r} already defined on row {seen[sn]}")
        seen[sn] = line
        cpu = _int(name, line, "cpu_milli", cells[i_cpu])
        mem = _int(name, line, "memory_mib", cells[i_mem])
        count = _int(name, line, "gpu", cells[i_gpu])
        model = cells[i_model].strip() if count else ""
        if count and not model:
            raise TraceError(name, line, "model", f"empty GPU model on a node with {count} GPUs")
        gpus = (GpuSpec(model, gpu_memory_mib(model)),) * count
        try:
            nodes.append(NodeSpec(sn, cpu, mem, gpus, labels={}, links=None))
        except ClusterError as exc:
            raise TraceError(name, line, None, str(exc)) from None
    return nodes


def load_pods(path: str | Path) -> list[TracePod]:
    """Read an openb pod list into ``TracePod``s, in file order.

    ``num_gpu`` becomes ``Request.num_gpus``; ``gpu_milli`` is the share of each GPU and must be
    0 for CPU-only pods, 1..1000 for one-GPU pods and exactly 1000 for multi-GPU pods.
    ``gpu_spec`` is split on ``|`` into ``gpu_models`` (blank parts and repeats dropped; empty
    or absent column = any model). ``pod_phase`` (absent: ``""``) and the three time columns
    (absent or empty cell: ``None``) are copied as they are; ``qos`` and unknown columns are
    ignored. Pod names may repeat (the sampled files reuse them). Raises ``TraceError`` for
    every malformed row; see ``load_nodes``.
    """
    name = str(path)
    header, rows = _read_table(path, POD_COLUMNS, "pod list")
    i_name, i_cpu, i_mem, i_num, i_milli = (header[c] for c in POD_COLUMNS)
    i_spec = header.get("gpu_spec")
    i_phase = header.get("pod_phase")
    times = [(c, header[c]) for c in _TIME_COLUMNS if c in header]
    pods: list[TracePod] = []
    for line, cells in rows:
        pod = cells[i_name].strip()
        if not pod:
            raise TraceError(name, line, "name", "empty pod name")
        cpu = _int(name, line, "cpu_milli", cells[i_cpu])
        mem = _int(name, line, "memory_mib", cells[i_mem])
        num = _int(name, line, "num_gpu", cells[i_num])
        milli = _int(name, line, "gpu_milli", cells[i_milli])
        _check_share(name, line, num, milli)
        models: tuple[str, ...] = ()
        if i_spec is not None and cells[i_spec].strip():
            parts = (p.strip() for p in cells[i_spec].split("|"))
            models = tuple(dict.fromkeys(p for p in parts if p))
        stamps: dict[str, int | None] = dict.fromkeys(_TIME_COLUMNS)
        for column, index in times:
            if cells[index].strip():
                stamps[column] = _int(name, line, column, cells[index])
        try:
            request = Request(pod, cpu, mem, num_gpus=num, gpu_milli=milli, gpu_models=models)
        except RequestError as exc:
            raise TraceError(name, line, None, str(exc)) from None
        phase = cells[i_phase].strip() if i_phase is not None else ""
        pods.append(
            TracePod(
                request,
                creation_time=stamps["creation_time"],
                deletion_time=stamps["deletion_time"],
                scheduled_time=stamps["scheduled_time"],
                phase=phase,
            )
        )
    return pods


def _check_share(path: str, line: int, num_gpu: int, gpu_milli: int) -> None:
    """Raise ``TraceError`` unless (num_gpu, gpu_milli) is a share openb allows."""
    if gpu_milli > MILLI_PER_GPU:
        raise TraceError(
            path, line, "gpu_milli", f"{gpu_milli} is above {MILLI_PER_GPU} (one whole GPU)"
        )
    if num_gpu == 0 and gpu_milli > 0:
        raise TraceError(
            path,
            line,
            "gpu_milli",
            f"{gpu_milli} with num_gpu 0: a CPU-only pod cannot take a GPU share (use 0)",
        )
    if num_gpu > 0 and gpu_milli == 0:
        raise TraceError(
            path,
            line,
            "gpu_milli",
            f"0 with num_gpu {num_gpu}: a GPU pod needs a share of 1..{MILLI_PER_GPU} per GPU",
        )
    if num_gpu > 1 and gpu_milli < MILLI_PER_GPU:
        raise TraceError(
            path,
            line,
            "gpu_milli",
            f"{gpu_milli} with num_gpu {num_gpu}: only a one-GPU pod may take part of a GPU"
            f" (multi-GPU pods need {MILLI_PER_GPU})",
        )


def _int(path: str, line: int, column: str, cell: str) -> int:
    """``cell`` as a non-negative integer, or ``TraceError`` saying what is wrong with it."""
    text = cell.strip()
    if not text:
        raise TraceError(path, line, column, "empty value; a whole number is required")
    try:
        if "_" in text:
            raise ValueError(text)
        value = int(text)
    except ValueError:
        raise TraceError(path, line, column, f"{text!r} is not a whole number") from None
    if value < 0:
        raise TraceError(path, line, column, f"{value} is negative")
    return value


def _read_table(
    path: str | Path, required: Sequence[str], kind: str
) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Read ``path`` and check its header; return column positions and the data rows.

    The rows come as (line number, cells) with blank lines skipped; each has as many cells as
    the header (else ``TraceError``). At least one data row is guaranteed.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError(
            name, None, None, f"file not found; give the path of an openb {kind} CSV"
        ) from None
    except IsADirectoryError:
        raise TraceError(
            name, None, None, f"is a folder; give the path of an openb {kind} CSV inside it"
        ) from None
    except UnicodeDecodeError as exc:
        raise TraceError(
            name, None, None, f"not UTF-8 text (byte {exc.start}); is this a CSV file?"
        ) from None
    except OSError as exc:
        raise TraceError(
            name, None, None, f"cannot read the file ({exc.strerror}); check its permissions"
        ) from None
    records = _records(name, text)
    if not records:
        raise TraceError(
            name, None, None, f"file is empty; a {kind} starts with the header {','.join(required)}"
        )
    header_line, cells = records[0]
    header: dict[str, int] = {}
    for index, cell in enumerate(cells):
        header.setdefault(cell.strip(), index)
    for column in required:
        if column not in header:
            other = _other_kind(header, kind)
            raise TraceError(
                name,
                header_line,
                column,
                f"missing required column '{column}'; a {kind} needs {', '.join(required)}"
                + (f" (this looks like a {other})" if other else ""),
            )
    if len(records) == 1:
        raise TraceError(name, None, None, f"no data rows after the header; an empty {kind}?")
    width = len(cells)
    for line, row in records:
        if len(row) != width:
            # Name the first column the row lacks; none when it has too many fields.
            lacking = cells[len(row)].strip() if len(row) < width else None
            raise TraceError(
                name, line, lacking, f"row has {len(row)} fields but the header has {width}"
            )
    return header, records[1:]


def _records(path: str, text: str) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records of ``text`` with the line each starts on (the first line is 1);
    ``csv.Error`` becomes ``TraceError``."""
    reader = csv.reader(io.StringIO(text), strict=True)
    records: list[tuple[int, list[str]]] = []
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return records
        except csv.Error as exc:
            raise TraceError(path, line, None, f"not valid CSV: {exc}") from None
        if any(cell.strip() for cell in row):
            records.append((line, row))
        line = reader.line_num + 1


def _other_kind(header: Mapping[str, int], kind: str) -> str | None:
    """Name the other openb list kind when ``header`` has all of its columns."""
    if kind == "pod list" and all(c in header for c in NODE_COLUMNS):
        return "node list; use load_nodes"
    if kind == "node list" and all(c in header for c in POD_COLUMNS):
        return "pod list; use load_pods"
    return None
