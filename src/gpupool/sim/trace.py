"""Trace loading: the openb node and pod CSV files (see FORMAT.md of the trace folder).

``load_nodes`` reads a node list (``sn,cpu_milli,memory_mib,gpu,model``) and ``load_pods`` a pod
list (``name,cpu_milli,memory_mib,num_gpu,gpu_milli`` plus the optional ``gpu_spec``, ``qos``,
``pod_phase``, ``creation_time``, ``deletion_time`` and ``scheduled_time``). Columns are found
by header name, so their order does not matter and unknown columns are ignored. Every problem
in a file raises ``TraceError`` naming the file, the 1-based line (the header is line 1) and the
column, so that a user can open the file at the right place. Quoting follows the csv module in
strict mode (a stray quote is an error); blank lines are skipped but still counted.

Sizes are bounded where they are parsed (``MAX_*`` below), so a hostile file costs at most
memory in proportion to ``MAX_ROWS`` and never to a number written in it: a file is read one
line at a time (a line longer than ``MAX_LINE_CHARS`` is refused before it is parsed), each row
is turned into its object at once, and every number has a ceiling far above any real cluster.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

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

MAX_ROWS: Final = 100_000
"""Data rows a node or pod list may have (the openb files have at most ~10,000)."""
MAX_LINE_CHARS: Final = 1 << 20
"""Characters one line of a trace file may have."""
MAX_GPUS_PER_NODE: Final = 64
"""GPUs one node may have, and GPUs one pod may ask for."""
MAX_GPUS_TOTAL: Final = 100_000
"""GPUs a whole node list may have (openb: 6,212)."""
MAX_CPU_MILLI: Final = 10_000_000
"""CPU of one node or pod, in thousandths of a core (10,000 cores)."""
MAX_MEMORY_MIB: Final = 1 << 26
"""Memory of one node or pod, MiB (64 TiB)."""
MAX_TIME_S: Final = 10**12
"""Largest creation/deletion/scheduled time, in seconds."""
_SHOWN: Final = 40
"""Characters of a bad cell quoted in a message."""


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
    nodes: list[NodeSpec] = []
    seen: dict[str, int] = {}
    total_gpus = 0
    with _table(path, NODE_COLUMNS, "node list") as (header, rows):
        i_sn, i_cpu, i_mem, i_gpu, i_model = (header[c] for c in NODE_COLUMNS)
        for line, cells in rows:
            sn = cells[i_sn].strip()
            if not sn:
                raise TraceError(name, line, "sn", "empty node name")
            if sn in seen:
                raise TraceError(name, line, "sn",
                                 f"node {_show(sn)} already defined on row {seen[sn]}")
            seen[sn] = line
            cpu = _int(name, line, "cpu_milli", cells[i_cpu], MAX_CPU_MILLI)
            mem = _int(name, line, "memory_mib", cells[i_mem], MAX_MEMORY_MIB)
            count = _int(name, line, "gpu", cells[i_gpu], MAX_GPUS_PER_NODE)
            total_gpus += count
            if total_gpus > MAX_GPUS_TOTAL:
                raise TraceError(name, line, "gpu", f"the node list has more than "
                                 f"{MAX_GPUS_TOTAL} GPUs up to this row; split the cluster")
            model = cells[i_model].strip() if count else ""
            if count and not model:
                raise TraceError(name, line, "model",
                                 f"empty GPU model on a node with {count} GPUs")
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
    pods: list[TracePod] = []
    with _table(path, POD_COLUMNS, "pod list") as (header, rows):
        _pods(name, header, rows, pods)
    return pods


def _pods(name: str, header: Mapping[str, int], rows: Iterator[tuple[int, list[str]]],
          pods: list[TracePod]) -> None:
    """Append the ``TracePod`` of every row to ``pods`` (see ``load_pods``)."""
    i_name, i_cpu, i_mem, i_num, i_milli = (header[c] for c in POD_COLUMNS)
    i_spec = header.get("gpu_spec")
    i_phase = header.get("pod_phase")
    times = [(c, header[c]) for c in _TIME_COLUMNS if c in header]
    for line, cells in rows:
        pod = cells[i_name].strip()
        if not pod:
            raise TraceError(name, line, "name", "empty pod name")
        cpu = _int(name, line, "cpu_milli", cells[i_cpu], MAX_CPU_MILLI)
        mem = _int(name, line, "memory_mib", cells[i_mem], MAX_MEMORY_MIB)
        num = _int(name, line, "num_gpu", cells[i_num], MAX_GPUS_PER_NODE)
        milli = _int(name, line, "gpu_milli", cells[i_milli], 10 * MILLI_PER_GPU)
        _check_share(name, line, num, milli)
        models: tuple[str, ...] = ()
        if i_spec is not None and cells[i_spec].strip():
            parts = (p.strip() for p in cells[i_spec].split("|"))
            models = tuple(dict.fromkeys(p for p in parts if p))
        stamps: dict[str, int | None] = dict.fromkeys(_TIME_COLUMNS)
        for column, index in times:
            if cells[index].strip():
                stamps[column] = _int(name, line, column, cells[index], MAX_TIME_S)
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


def _show(text: str) -> str:
    """``text`` quoted for a message, cut to ``_SHOWN`` characters."""
    return repr(text) if len(text) <= _SHOWN else repr(text[:_SHOWN]) + "..."


def _int(path: str, line: int, column: str, cell: str, maximum: int) -> int:
    """``cell`` as an integer in 0..``maximum``, or ``TraceError`` saying what is wrong."""
    text = cell.strip()
    if not text:
        raise TraceError(path, line, column, "empty value; a whole number is required")
    digits = text.lstrip("+").lstrip("0")
    if digits.isdigit() and len(digits) > len(str(maximum)):  # refused before int() parses it
        raise TraceError(path, line, column, f"{_show(text)} is above the limit of {maximum}")
    try:
        if "_" in text:
            raise ValueError(text)
        value = int(text)
    except ValueError:
        raise TraceError(path, line, column, f"{_show(text)} is not a whole number") from None
    if value < 0:
        raise TraceError(path, line, column, f"{value} is negative")
    if value > maximum:
        raise TraceError(path, line, column, f"{value} is above the limit of {maximum}")
    return value


@contextmanager
def _table(
    path: str | Path, required: Sequence[str], kind: str
) -> Iterator[tuple[dict[str, int], Iterator[tuple[int, list[str]]]]]:
    """Open ``path``, check its header, and give the column positions and an iterator of the
    data rows, read one at a time while the file is open.

    The rows come as (line number, cells) with blank lines skipped; each has as many cells as
    the header, and there are 1..``MAX_ROWS`` of them (else ``TraceError`` when the iterator
    reaches the offending row, or its end for a file without data rows).
    """
    name = str(path)
    with _open(path, kind) as handle:
        records = _records(name, handle)
        first = next(records, None)
        if first is None:
            raise TraceError(
                name, None, None,
                f"file is empty; a {kind} starts with the header {','.join(required)}",
            )
        header_line, cells = first
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
        yield header, _rows(name, kind, cells, records)


def _open(path: str | Path, kind: str) -> TextIO:
    """``path`` opened as UTF-8 text; ``TraceError`` saying why it cannot be."""
    name = str(path)
    try:
        return Path(path).open(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError(
            name, None, None, f"file not found; give the path of an openb {kind} CSV"
        ) from None
    except IsADirectoryError:
        raise TraceError(
            name, None, None, f"is a folder; give the path of an openb {kind} CSV inside it"
        ) from None
    except OSError as exc:
        raise TraceError(
            name, None, None, f"cannot read the file ({exc.strerror}); check its permissions"
        ) from None


def _rows(
    name: str, kind: str, cells: list[str], records: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str]]]:
    """The data ``records`` after the header ``cells``, checked one by one (see ``_table``)."""
    width = len(cells)
    count = 0
    for line, row in records:
        count += 1
        if count > MAX_ROWS:
            raise TraceError(
                name, line, None, f"more than {MAX_ROWS} data rows; split the {kind}"
            )
        if len(row) != width:
            # Name the first column the row lacks; none when it has too many fields.
            lacking = cells[len(row)].strip() if len(row) < width else None
            raise TraceError(
                name, line, lacking, f"row has {len(row)} fields but the header has {width}"
            )
        yield line, row
    if not count:
        raise TraceError(name, None, None, f"no data rows after the header; an empty {kind}?")


def _lines(path: str, handle: TextIO) -> Iterator[str]:
    """The lines of ``handle``; ``TraceError`` for a line over ``MAX_LINE_CHARS`` (before it
    is held whole) or text that is not UTF-8."""
    number = 0
    while True:
        number += 1
        try:
            text = handle.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError:
            where = _bad_utf8(path)
            raise TraceError(path, None, None, f"not UTF-8 text ({where}); is this a CSV file?"
                             ) from None
        if not text:
            return
        if len(text) > MAX_LINE_CHARS and not text.endswith("\n"):
            raise TraceError(path, number, None,
                             f"line is longer than {MAX_LINE_CHARS} characters")
        yield text


def _bad_utf8(path: str) -> str:
    """Where the first byte that is not UTF-8 is in ``path``: ``line L, byte B``."""
    with Path(path).open("rb") as raw:
        number = 0
        while chunk := raw.readline(MAX_LINE_CHARS + 1):
            number += 1
            try:
                chunk.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}, byte {exc.start + 1}"
    return "somewhere"


def _records(path: str, handle: TextIO) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records of ``handle`` with the line each starts on (the first line is
    1); ``csv.Error`` becomes ``TraceError``."""
    reader = csv.reader(_lines(path, handle), strict=True)
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TraceError(path, line, None, f"not valid CSV: {exc}") from None
        if any(cell.strip() for cell in row):
            yield line, row
        line = reader.line_num + 1


def _other_kind(header: Mapping[str, int], kind: str) -> str | None:
    """Name the other openb list kind when ``header`` has all of its columns."""
    if kind == "pod list" and all(c in header for c in NODE_COLUMNS):
        return "node list; use load_nodes"
    if kind == "node list" and all(c in header for c in POD_COLUMNS):
        return "pod list; use load_pods"
    return None
