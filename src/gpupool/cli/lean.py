"""Imports a ``gpupool`` process never uses, skipped when the CLI runs (``GpupoolApp()``), never
merely on import of the CLI's modules:

- httpx imports its own command-line tool (``httpx._main``: click, pygments, rich.syntax and
  rich.progress, ~30 ms) whenever those happen to be installed; gpupool only uses httpx's
  client, so an empty ``httpx._main`` stands in for it (``httpx.main`` then does nothing);
- pydantic reads the metadata of every installed distribution (~10 ms here) the first time it
  builds a model, looking for plugins; the CLI uses none (``PYDANTIC_DISABLE_PLUGINS``; a
  value the user set is kept).

``lean_options`` spares a command pydantic itself where Typer would import it only to parse
options whose values it passes through unchanged (``gpupool ps`` uses no model otherwise).
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from functools import cache
from typing import Any

import typer


def skip_unused_imports() -> None:
    """Apply the two measures of the module (each only if it can still take effect)."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        stub = types.ModuleType("httpx._main", "gpupool: httpx's CLI is not used here")

        def main(*_args: Any, **_kwargs: Any) -> None:
            raise SystemExit("httpx's command-line tool is not available in this process")

        stub.main = main  # type: ignore[attr-defined]
        sys.modules["httpx._main"] = stub


class GpupoolApp(typer.Typer):
    """The ``gpupool`` Typer app: running it (``app()``) first skips the unused imports."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        skip_unused_imports()
        return super().__call__(*args, **kwargs)


def lean_options(command: Any, ctx: Any = None) -> Any:
    """``command`` (a click command built by Typer), its plain ``str``, ``int`` and ``bool``
    options coerced without pydantic whenever Typer's own coercion would take the value as it
    is: any string for a ``str``; an int, or ASCII digits, within ``min``/``max`` for an
    ``int``; a bool for a ``bool`` (a flag left unset, None, is never coerced). Any other
    value goes to Typer's coercion (built then), which accepts or refuses it with its own
    message: the command behaves as before, and a run that only passes such values neither
    imports pydantic nor builds a TypeAdapter per option (~40-100 ms).

    Typer (>= 0.2x) builds a pydantic TypeAdapter for each option it coerces (even for
    ``--install-completion`` left unset); this relies on ``_TyperParameter._runtime_param``
    (its cache of that adapter) and does nothing with a Typer that has none. With ``ctx``
    (the context that runs ``command``, or its parent's when the command does not set its
    own help option names), its ``--help`` option too."""
    lean = _lean_param()
    if lean is None:  # a Typer that coerces otherwise (click's types): nothing to do
        return command
    from typer.core import _TyperParameter

    params = list(getattr(command, "params", ()))
    if ctx is not None and "help_option_names" not in (command.context_settings or {}):
        params.append(command.get_help_option(ctx))  # made once; cached by the command
    for param in params:
        if not isinstance(param, _TyperParameter) or param.multiple or param.nargs != 1:
            continue
        if getattr(param, "_runtime_param", False) is not None:
            continue  # already built (or a Typer without the cache)
        desc = param.type_descriptor
        info = desc.parameter_info
        if desc.annotation not in (str, int, bool) or desc.file_annotation is not None:
            continue
        if info.parser is not None or info.clamp:
            continue
        param._runtime_param = lean(info, desc.annotation, desc)
    return command


@cache
def _lean_param() -> type[Any] | None:
    """Typer's RuntimeParam taking the values ``lean_options`` says as they are, the others
    to Typer's own coercion; None when this Typer has no such class."""
    try:
        from typer._coercion import RuntimeParam, build_runtime_param
    except ImportError:
        return None

    @dataclass(frozen=True)
    class LeanParam(RuntimeParam):
        descriptor: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if (self.annotation is str and type(value) is str) or (
                    self.annotation is bool and type(value) is bool):
                return value
            if self.annotation is int:
                number = _whole(value)
                info = self.parameter_info
                if number is not None and (info.min is None or number >= info.min) and (
                        info.max is None or number <= info.max):
                    return number
            real = build_runtime_param(self.descriptor)
            return real._coerce_value(value, param=param, ctx=ctx)

    return LeanParam


def _whole(value: Any) -> int | None:
    """``value`` as the int pydantic makes of it, when that is plain: an int, or up to 18
    ASCII digits."""
    if type(value) is int:
        return value
    if type(value) is str and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    return None
