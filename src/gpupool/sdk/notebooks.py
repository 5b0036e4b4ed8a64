"""What the clients and the CLI share about notebooks (workloads of kind ``notebook``:
JupyterLab started by the server as its owner, reached through the gateway at
``/nb/<id>/lab``, suspended when idle). Pure: no I/O.

- ``notebook_spec``: the JobSpec of ``create_notebook`` (only the fields given are sent);
- ``ready``: whether a notebook answers (its ``url`` is set), and ``NotebookNotReady`` when
  waiting longer is useless (it ended, it is suspended, it is not a notebook);
- ``gateway_base``, ``websocket_url``: the addresses under a notebook's own prefix on the
  gateway, from its ``url`` (what ``gpupool shell`` talks to).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from gpupool.schemas.jobs import JobSpec, JobView, Kind, Phase
from gpupool.sdk.errors import NotebookNotReady

NOTEBOOK = Kind.NOTEBOOK.value
"""The ``kind`` of a notebook on the wire (and the listing's ``kind=`` filter)."""


def notebook_spec(
    name: str | None = None,
    gpus: float | str = 0,
    gpu_memory: int | str | None = None,
    gpu_model: str | None = None,
    cpu: float | str = 0,
    memory: int | str = 0,
    queue: str | None = None,
    priority: int = 0,
    idle_timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
) -> JobSpec:
    """The JobSpec of a notebook with these fields; a field left at its default is not set
    (so not sent: the server's default applies). pydantic's ValidationError, naming the
    field, when one breaks the contract (e.g. ``idle_timeout_s`` below the minimum)."""
    fields: dict[str, object] = {"kind": NOTEBOOK}
    given: dict[str, object] = {
        "name": name, "gpu_memory": gpu_memory, "gpu_model": gpu_model, "queue": queue,
        "idle_timeout_s": idle_timeout_s,
        "gpus": gpus or None, "cpu": cpu or None, "memory": memory or None,
        "priority": priority or None, "env": dict(env) if env else None,
    }
    fields.update({k: v for k, v in given.items() if v is not None})
    return JobSpec.model_validate(fields)


def ready(view: JobView) -> bool:
    """True once the notebook answers through the gateway (``view.url`` is set); False while
    it is on its way (pending, starting, or running before Jupyter answers).
    NotebookNotReady when waiting cannot help: the workload is not a notebook, it ended, or
    it is suspended (it needs a ``resume`` first)."""
    if view.kind != Kind.NOTEBOOK:
        raise NotebookNotReady(view, f"{view.id} ({view.name}) is a {view.kind.value}, "
                                     "not a notebook")
    if view.phase.final:
        why = f": {view.reason}" if view.reason and view.reason != view.phase.value else ""
        raise NotebookNotReady(view, f"notebook {view.name} ({view.id}) ended: "
                                     f"{view.phase.value}{why}")
    if view.phase == Phase.SUSPENDED:
        raise NotebookNotReady(view, f"notebook {view.name} ({view.id}) is suspended: "
                                     "resume it first")
    return view.url is not None


def gateway_base(url: str) -> str:
    """The prefix of a notebook on the gateway (``https://gw:8471/nb/7/``) from its
    ``JobView.url`` (``https://gw:8471/nb/7/lab``, or with a trailing slash, a query or a
    fragment); ValueError when ``url`` does not end in ``lab`` as the contract says."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if parts.scheme not in ("http", "https") or not parts.netloc or not path.endswith("/lab"):
        raise ValueError(f"{url!r} is not a notebook address (expected .../nb/<id>/lab)")
    return urlunsplit((parts.scheme, parts.netloc, path[: -len("lab")], "", ""))


def websocket_url(base: str, path: str) -> str:
    """``path`` under the gateway prefix ``base`` as a WebSocket address: ``ws://`` for an
    ``http://`` gateway, ``wss://`` for ``https://``."""
    scheme, rest = base.split("://", 1)
    return ("wss" if scheme == "https" else "ws") + "://" + rest + path.lstrip("/")
