"""Values the wire contract accepts anywhere: storable text and finite, non-boolean numbers.

Text: a string that PostgreSQL ``text``/``json`` cannot hold (a NUL character) or that is not
valid Unicode (a lone surrogate such as ``"\\ud800"``, which JSON escapes can carry but UTF-8
cannot encode) is refused wherever it appears: values, dict keys, list items, nested.
Numbers: NaN and Infinity (JSON ``NaN``/``Infinity``, or ``1e999``) are refused too; they
would silently become ``null`` when stored.

These checks run at the server's request boundary (``gpupool.server.api.hostile``) on the
raw request, not as model validators, on purpose: the server re-validates stored rows with
the same models, and a row written by an older version must still load (and be listed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated

from pydantic import BeforeValidator, Field

from gpupool.schemas.units import finite_number

Number = Annotated[float, BeforeValidator(finite_number), Field(allow_inf_nan=False)]
"""A float field that refuses booleans (``true`` is not 1.0) and NaN/Infinity."""
Integer = Annotated[int, BeforeValidator(finite_number)]
"""An int field that refuses booleans (``true`` is not 1)."""

MAX_PROBLEMS = 10


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored or sent as UTF-8 JSON; None when it can."""
    if "\0" in value:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = value[exc.start]
            return f"contains a lone surrogate ({ascii(bad)[1:-1]}), which is not valid Unicode"
    return None


def number_problem(value: object) -> str | None:
    """Why the JSON number ``value`` is refused (NaN, Infinity); None when it is fine."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (not NaN or Infinity)"
    return None


def segment(key: object) -> str:
    """A path segment that is itself safe to print (hostile keys as escaped literals)."""
    text = str(key)
    return text if text_problem(text) is None else ascii(text)


Problem = tuple[tuple[str, ...], str]


def find_problems(data: object, path: tuple[str, ...] = ()) -> Iterator[Problem]:
    """(path, problem) for each hostile string or number in the JSON-like ``data``; a path is
    safe to print (hostile keys appear escaped)."""
    if isinstance(data, str):
        problem = text_problem(data)
        if problem:
            yield path, problem
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and (problem := text_problem(key)):
                yield path, f"the key {key!a} {problem}"
            yield from find_problems(value, (*path, segment(key)))
    elif isinstance(data, list | tuple):
        for index, item in enumerate(data):
            yield from find_problems(item, (*path, str(index)))
    elif (problem := number_problem(data)) is not None:
        yield path, problem
