"""Pipeline templates, ``${{ expression }}``: finding them in linear time and rendering them.
Pure: no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

TEMPLATE = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
"""The template syntax, for reading: the scanning is :func:`scan` (this pattern backtracks,
cubic on ``${{`` and a run of spaces)."""

def references(text: str) -> list[str]:
    """The expressions inside ``${{ ... }}`` of ``text``."""
    return [expr for _, _, expr in scan(text)]


def scan(text: str) -> Iterator[tuple[int, int, str]]:
    """``(start, end, expression)`` of each ``${{ expression }}`` in ``text``: what
    ``TEMPLATE.finditer`` finds, in linear time. A template ends at the first ``}}``; its
    expression is stripped of whitespace and may not span a line break (then the ``${{`` is
    plain text and the next one is tried)."""
    size = len(text)
    close = -2  # the first "}}" at or after the expression's start; -1: none left
    close_ws = 0  # where the whitespace before that "}}" begins
    newline = -2  # the first line break at or after the expression's start; size: none
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            return
        begin = start + 3
        while begin < size and text[begin].isspace():
            begin += 1
        if close != -1 and close < begin:
            close = text.find("}}", begin)
            if close < 0:
                return
            close_ws = close
            while close_ws > begin and text[close_ws - 1].isspace():
                close_ws -= 1
        if close < 0:
            return
        end = max(begin, close_ws)
        if newline < begin:
            newline = text.find("\n", begin)
            if newline < 0:
                newline = size
        if newline < end:
            pos = start + 1
            continue
        yield start, close + 2, text[begin:end]
        pos = close + 2


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def render(text: str, values: Mapping[str, Any]) -> str:
    """``text`` with every ``${{ expr }}`` replaced by ``values[expr]`` as text (JSON for
    lists and dicts); KeyError for an expression without a value."""
    parts: list[str] = []
    done = 0
    for start, end, expr in scan(text):
        parts.append(text[done:start])
        parts.append(as_text(values[expr]))
        done = end
    if not done:
        return text
    parts.append(text[done:])
    return "".join(parts)


def render_any(value: Any, values: Mapping[str, Any]) -> Any:
    """``render`` applied to every string inside lists and dicts."""
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, dict):
        return {k: render_any(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render_any(v, values) for v in value]
    return value
