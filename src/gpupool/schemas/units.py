"""Human units on the wire: memory sizes like ``16GiB`` / ``512MiB`` / ``20G``, in MiB."""

from __future__ import annotations

import re

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
    return round(number * _UNITS[unit])
