"""Human units on the wire: memory sizes like ``16GiB`` / ``512MiB`` / ``20G``, in MiB."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

MIB_PER_TIB = 1024 * 1024
MAX_MEMORY_MIB = 64 * MIB_PER_TIB
"""The most main memory one node (one task) may ask for: 64 TiB."""
MAX_GPU_MEMORY_MIB = MIB_PER_TIB
"""The most memory one GPU may be asked for: 1 TiB."""

_UNITS = {
    "": 1,
    "m": 1,
    "mi": 1,
    "mib": 1,
    "mb": 1,
    "g": 1024,
    "gi": 1024,
    "gib": 1024,
    "gb": 1024,
    "t": 1024 * 1024,
    "ti": 1024 * 1024,
    "tib": 1024 * 1024,
    "tb": 1024 * 1024,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_mib(value: str | int | float) -> int:
    """MiB from an integer (already MiB) or a string with a unit (GiB/G/GB are all 1024 MiB:
    GPU and memory sizes are binary in practice). Raises ValueError naming the problem."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 16GiB or 512MiB")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a size must be a finite number")
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    if not isinstance(value, str):
        raise ValueError("expected a size such as 16GiB or 512MiB")
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size such as 16GiB or 512MiB")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {match.group(2)!r} in {value!r}; use MiB, GiB or TiB")
    if not math.isfinite(number * _UNITS[unit]):
        raise ValueError("the size is too large")
    return round(number * _UNITS[unit])


def size_text(mib: int) -> str:
    """``mib`` in the largest binary unit that divides it: ``64 TiB``, ``512 MiB``."""
    for unit, factor in (("TiB", MIB_PER_TIB), ("GiB", 1024)):
        if mib and mib % factor == 0:
            return f"{mib // factor} {unit}"
    return f"{mib} MiB"


def mib_at_most(limit: int, where: str = "") -> Callable[[str | int | float], int]:
    """A parser like :func:`parse_mib` that also refuses sizes above ``limit`` MiB, saying
    the bound (``where``, e.g. "per node", is added to the message)."""
    suffix = f" {where}" if where else ""

    def parse(value: str | int | float) -> int:
        mib = parse_mib(value)
        if mib > limit:
            raise ValueError(f"at most {size_text(limit)} ({limit} MiB){suffix}")
        return mib

    return parse


def finite_number(value: object) -> object:
    """For numeric fields (a pydantic before-validator): refuse JSON booleans and NaN or
    Infinity, which would otherwise pass as 1/0 or slip past range checks; anything else is
    left to the field's own type and bounds."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number (not NaN or Infinity)")
    return value
