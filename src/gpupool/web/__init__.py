"""The web console: a single-page app of hand-written HTML, CSS and ES modules that talks to
the REST API only (no Python imports of the server, no build step, no CDN). The server serves
the folder returned by :func:`static_dir` at ``/``."""

from __future__ import annotations

from pathlib import Path


def static_dir() -> Path:
    """The folder holding the console's assets (index.html, app.js, ...). It ships inside the
    package (package-data), so an installed gpupool serves the console offline."""
    return Path(__file__).resolve().parent / "static"
