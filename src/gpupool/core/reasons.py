"""Plain-language reasons for requests that stay unplaced."""

from __future__ import annotations

from collections.abc import Sequence

from gpupool.core.request import Request


def cpu_text(milli: int) -> str:
    return f"{milli / 1000:g} CPU"


def memory_text(mib: int) -> str:
    if mib >= 1024 and mib % 1024 == 0:
        return f"{mib // 1024} GiB memory"
    return f"{mib} MiB memory"


def nodes_text(count: int, verb: str = "") -> str:
    """``1 node has`` / ``3 nodes have`` (``verb`` given in plural form; ``have`` or ``lack``)."""
    noun = f"{count} node" if count == 1 else f"{count} nodes"
    if not verb:
        return noun
    if count == 1:
        verb = {"have": "has"}.get(verb, verb + "s")
    return f"{noun} {verb}"


def labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    """Required node labels in words, e.g. ``the label gpupool.io/images=podman``."""
    pairs = ", ".join(f"{key}={value}" for key, value in labels)
    return f"the label{'s' if len(labels) > 1 else ''} {pairs}"


def needs_text(request: Request) -> str:
    """What the request needs, e.g. ``needs 2 whole A100, 8 CPU, 16 GiB memory``."""
    parts = []
    if request.is_gpu:
        parts.append(request.describe())
    if request.cpu_milli:
        parts.append(cpu_text(request.cpu_milli))
    if request.memory_mib:
        parts.append(memory_text(request.memory_mib))
    if request.node_labels:
        parts.append("a node with " + labels_text(request.node_labels))
    return "needs " + (", ".join(parts) if parts else "nothing")


def unplaced_reason(request: Request, fragments: Sequence[str]) -> str:
    """Join what the request needs with why each group of nodes was ruled out."""
    why = "; ".join(f for f in fragments if f) or "no node passed the filters"
    return f"{needs_text(request)}: {why}"
