"""The teams of a multi-team simulation: ``TeamQueue`` and the queue YAML (``load_queues``).

A queue YAML lists the teams::

    teams:
      - {name: vision, quota_gpus: 16, borrow_limit_gpus: 32, weight: 2, cohort: lab}
      - {name: nlp, quota_gpus: 16, borrow_limit_gpus: 0, lend_limit_gpus: 8}

``gpupool.sim.workload`` re-exports both names, next to the job CSV they go with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final


class QueueError(ValueError):
    """A malformed queue YAML; ``str()`` is one line naming the file, the line when known
    and the team."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        where = path if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class TeamQueue:
    """One team's queue: its guaranteed GPUs (``quota_gpus``), how many more it may borrow
    from idle quota (``borrow_limit_gpus``), its fair-share ``weight`` (> 0), the ``cohort``
    it shares with (None: the whole cluster), how much of its quota it lends at most
    (``lend_limit_gpus``, None: all of it) and how long its running jobs without a time
    limit are assumed to run when a reservation's start is estimated (``default_run_limit``
    seconds, None: the policy's). The engine gives these their meaning."""

    name: str
    quota_gpus: float
    borrow_limit_gpus: float
    weight: float = 1.0
    cohort: str | None = None
    lend_limit_gpus: float | None = None
    default_run_limit: float | None = None


TEAM_KEYS: Final = ("name", "quota_gpus", "borrow_limit_gpus", "weight", "cohort",
                    "lend_limit_gpus", "default_run_limit")
MAX_TEAMS: Final = 10_000
MAX_FILE_CHARS: Final = 1 << 22


def load_queues(path: str | Path) -> list[TeamQueue]:
    """Read a queue YAML (``teams:``, a list of mappings with the keys of ``TeamQueue``) in
    file order.

    ``name``, ``quota_gpus`` and ``borrow_limit_gpus`` are required; ``weight`` defaults to 1,
    ``cohort``, ``lend_limit_gpus`` and ``default_run_limit`` to none (absent or null). GPU
    amounts are finite numbers >= 0, ``weight`` and ``default_run_limit`` (seconds) numbers
    > 0. Raises ``QueueError`` naming the file, the line and
    the team (by name, or by position when it has none) for: an unreadable file or invalid
    YAML, no ``teams`` list, another top-level key, a team that is not a mapping, an unknown or
    missing key, a bad value, or a name used twice.
    """
    import yaml

    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QueueError(name, None, "file not found; give the path of a queue YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QueueError(name, None, f"cannot read the file ({exc})") from None
    if len(text) > MAX_FILE_CHARS:
        raise QueueError(name, None, f"more than {MAX_FILE_CHARS} characters")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise QueueError(name, line, f"not valid YAML: {problem}") from None
    if not isinstance(data, dict) or not isinstance(data.get("teams"), list):
        raise QueueError(name, None, "expected a mapping with a 'teams' list, e.g. "
                         "teams: [{name: a, quota_gpus: 8, borrow_limit_gpus: 8}]")
    extra = sorted(str(k) for k in data if k != "teams")
    if extra:
        raise QueueError(name, None, f"unknown top-level key(s) {', '.join(extra)}; only "
                         "'teams' is read")
    entries: list[Any] = data["teams"]
    if not entries:
        raise QueueError(name, None, "the 'teams' list is empty")
    if len(entries) > MAX_TEAMS:
        raise QueueError(name, None, f"more than {MAX_TEAMS} teams")
    lines = _team_lines(root, len(entries))
    queues: list[TeamQueue] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        queue = _team(name, index, lines[index], entry)
        if queue.name in seen:
            raise _error(name, index, lines[index], queue.name,
                         f"name used twice (first by team #{seen[queue.name] + 1})")
        seen[queue.name] = index
        queues.append(queue)
    return queues


def _team_lines(root: Any, count: int) -> list[int | None]:
    """The 1-based line of each team's entry in the composed YAML tree (None if unknown)."""
    lines: list[int | None] = [None] * count
    try:
        for key, value in root.value:
            if key.value == "teams":
                for i, node in enumerate(value.value[:count]):
                    lines[i] = node.start_mark.line + 1
    except (AttributeError, TypeError, ValueError):
        pass
    return lines


def _error(path: str, index: int, line: int | None, team: object, message: str) -> QueueError:
    who = f"team {team!r}" if isinstance(team, str) and team.strip() else f"team #{index + 1}"
    return QueueError(path, line, f"{who}: {message}")


def _team(path: str, index: int, line: int | None, entry: object) -> TeamQueue:
    if not isinstance(entry, dict):
        raise _error(path, index, line, None,
                     "expected a mapping with name, quota_gpus and borrow_limit_gpus")
    team = entry.get("name")
    unknown = sorted(str(k) for k in entry if k not in TEAM_KEYS)
    if unknown:
        raise _error(path, index, line, team,
                     f"unknown key(s) {', '.join(unknown)}; known: {', '.join(TEAM_KEYS)}")
    if not isinstance(team, str) or not team.strip():
        raise _error(path, index, line, team, "'name' must be a non-empty string")
    for key in ("quota_gpus", "borrow_limit_gpus"):
        if key not in entry:
            raise _error(path, index, line, team, f"missing '{key}'")

    def amount(key: str, positive: bool = False) -> float:
        value = entry[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and math.isfinite(value) and (value > 0 if positive else value >= 0):
            return float(value)
        need = "a number > 0" if positive else "a number of GPUs >= 0"
        raise _error(path, index, line, team, f"'{key}' must be {need}, got {value!r}")

    cohort = entry.get("cohort")
    if cohort is not None and (not isinstance(cohort, str) or not cohort.strip()):
        raise _error(path, index, line, team, f"'cohort' must be a name, got {cohort!r}")
    return TeamQueue(
        name=team.strip(),
        quota_gpus=amount("quota_gpus"),
        borrow_limit_gpus=amount("borrow_limit_gpus"),
        weight=amount("weight", positive=True) if entry.get("weight") is not None else 1.0,
        cohort=cohort.strip() if cohort is not None else None,
        lend_limit_gpus=(amount("lend_limit_gpus")
                         if entry.get("lend_limit_gpus") is not None else None),
        default_run_limit=(amount("default_run_limit", positive=True)
                           if entry.get("default_run_limit") is not None else None),
    )
