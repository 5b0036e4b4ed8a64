"""What each cell of the job table says (``gpupool ps``), from a JobView or from the server's
JSON object of one: the same text either way. Pure: no rich, no pydantic, no requests (the
table itself is ``jobs_render.jobs_table`` or, faster, ``ps_table``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from gpupool.schemas.jobs import JobView

PHASE_STYLE = {
    "pending": "yellow",
    "starting": "cyan",
    "running": "green",
    "succeeded": "dim green",
    "failed": "red",
    "cancelled": "dim",
    "suspended": "blue",
}
"""The style of each phase (a ``Phase`` is a ``str``: ``PHASE_STYLE[view.phase]`` works)."""
KINDS = ("job", "notebook", "service")
"""The values of ``schemas.jobs.Kind``, copied so that ``ps`` need not import the models
(tests/test_notebook_cli.py checks that they are the same)."""
REASON_WIDTH = 42
"""The REASON cell is cut to this many characters (unless wide). 48 before the KIND column
(6 wide): the table's natural width stayed what it was, so the columns of an 80-column
terminal still keep their widths (past that, rich narrows every column, the ID first)."""
NAME_WIDTH = 24
HEADERS = ("ID", "NAME", "KIND", "QUEUE", "PHASE", "GPUS", "NODE:GPUS", "AGE", "REASON")
PHASE_AT = HEADERS.index("PHASE")


class JobRow(NamedTuple):
    """One row of the job table: the text of each cell (``why`` whole: the table cuts it
    unless wide); ``phase`` is a key of PHASE_STYLE; ``kind`` is ``job`` or ``notebook``
    (last, with a default, as a NamedTuple needs; ``cells`` puts it in its column)."""

    id: str
    name: str
    queue: str
    phase: str
    gpus: str
    node: str
    age: str
    why: str
    kind: str = "job"

    @property
    def cells(self) -> tuple[str, ...]:
        """The cells in the order of HEADERS (the reason, whole, last)."""
        return (self.id, self.name, self.kind, self.queue, self.phase, self.gpus, self.node,
                self.age, self.why)


def mib(value: int) -> str:
    """``81920`` -> ``80GiB``; ``512`` -> ``512MiB``."""
    for unit, size in (("TiB", 1 << 20), ("GiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value}MiB"


def share(milli: int) -> str:
    return f"{milli / 1000:g}"


def gpus_text(gpus: float, gpu_memory: int | None, gpu_model: str | None) -> str:
    """What a job asks of GPUs in a few characters: ``2``, ``0.5``, ``20GiB``, ``-``."""
    if gpus == 0 and gpu_memory is None:
        return "-"
    parts = [f"{gpus:g}"] if gpus else []
    if gpu_memory is not None:
        parts.append(mib(gpu_memory))
    text = "/".join(parts)
    return f"{text} {gpu_model}" if gpu_model else text


def placement_text(node: str, gpus: Sequence[int], ranks: int) -> str:
    """``node:0,1``; ``node+3`` for a job on 4 nodes; ``node`` without GPUs."""
    if ranks > 1:
        return f"{node}+{ranks - 1}"
    if not gpus:
        return node
    return f"{node}:{','.join(str(g) for g in gpus)}"


def aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def age(at: datetime, now: datetime | None = None) -> str:
    """Time since ``at`` (naive times are UTC) as ``42s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0, int(((now or datetime.now(UTC)) - aware(at)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def shorten(text: str, width: int = REASON_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def why_text(reason: str, phase: str, exit_code: int | None) -> str:
    """The REASON cell: the reason unless it only repeats the phase; a failed job's exit
    code when no reason says more."""
    if reason and reason != phase:
        return reason
    if phase == "failed" and exit_code is not None:
        return f"exit code {exit_code}"
    return ""


def idle_marked(why: str, idle_since: datetime | None, now: datetime | None = None) -> str:
    """The REASON cell of a job flagged GPU-idle: ``GPU idle 35m`` first (then the reason);
    ``why`` unchanged when it is not flagged."""
    if idle_since is None:
        return why
    mark = f"GPU idle {age(idle_since, now)}"
    return f"{mark}; {why}" if why else mark


def view_row(view: JobView, now: datetime | None = None) -> JobRow:
    """The row of a JobView."""
    spec, place = view.spec, view.placement
    node = "" if place is None else placement_text(place.node, place.gpus, len(place.ranks))
    phase = view.phase.value
    idle = view.gpu_usage.idle_since if view.gpu_usage is not None else None
    return JobRow(view.id, shorten(view.name, NAME_WIDTH), view.queue, phase,
                  gpus_text(spec.gpus, spec.gpu_memory, spec.gpu_model), node,
                  age(view.created_at, now),
                  idle_marked(why_text(view.reason, phase, view.exit_code), idle, now),
                  view.kind.value)


def json_row(job: Mapping[str, Any], now: datetime | None = None) -> JobRow:
    """The row of a job as the server's JSON object (a JobView dumped as JSON): the same
    text as ``view_row`` of that JobView. KeyError, TypeError or ValueError when the object
    lacks a field the row needs or holds a value of the wrong kind (the caller says the
    answer did not fit the contract)."""
    spec, place = job["spec"], job.get("placement")
    phase = job["phase"]
    if phase not in PHASE_STYLE:
        raise ValueError(f"phase: unknown phase {phase!r}")
    node = "" if place is None else placement_text(
        _text(place["node"]), place.get("gpus") or [], len(place.get("ranks") or ()))
    gpus = spec.get("gpus", 0)
    if not isinstance(gpus, int | float) or isinstance(gpus, bool):
        raise TypeError("spec.gpus: not a number")
    created = datetime.fromisoformat(_text(job["created_at"]))
    kind = _text(job.get("kind", "job"))  # a server from before notebooks sends none
    if kind not in KINDS:
        raise ValueError(f"kind: unknown kind {kind!r}")
    usage = job.get("gpu_usage") or {}
    idle = usage.get("idle_since") if isinstance(usage, Mapping) else None
    why = why_text(_text(job.get("reason", "")), phase, job.get("exit_code"))
    return JobRow(_text(job["id"]), shorten(_text(job["name"]), NAME_WIDTH),
                  _text(job["queue"]), phase,
                  gpus_text(gpus, spec.get("gpu_memory"), spec.get("gpu_model")), node,
                  age(created, now),
                  idle_marked(why, None if idle is None
                              else datetime.fromisoformat(_text(idle)), now), kind)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value
