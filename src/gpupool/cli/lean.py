"""Imports a ``gpupool`` process never uses, skipped when the CLI runs (``GpupoolApp()``), never
merely on import of the CLI's modules:

- httpx imports its own command-line tool (``httpx._main``: click, pygments, rich.syntax and
  rich.progress, ~30 ms) whenever those happen to be installed; gpupool only uses httpx's
  client, so an empty ``httpx._main`` stands in for it (``httpx.main`` then does nothing);
- pydantic reads the metadata of every installed distribution (~10 ms here) the first time it
  builds a model, looking for plugins; the CLI uses none (``PYDANTIC_DISABLE_PLUGINS``; a
  value the user set is kept).
"""

from __future__ import annotations

import os
import sys
import types
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
