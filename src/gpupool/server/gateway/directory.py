"""What the gateway needs to know from the control plane, as one narrow protocol.

The server implements ``Directory`` over its database; the gateway's tests use a fake. The
gateway never touches the database itself, so everything it may learn about a caller or a
notebook passes through these five methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Visitor:
    """Who is calling: a gpupool user, by name, with their team and whether they are an
    admin (admins may open any notebook)."""

    user: str
    team: str
    admin: bool


@dataclass(frozen=True)
class Target:
    """Where notebook ``id`` is. ``state`` is ``"ready"`` when ``host:port`` answers
    (JupyterLab, started with ``base_url=/nb/<id>/``); anything else (``"starting"``,
    ``"pending"``, ``"suspended"``) means there is nothing to forward to yet. ``secret`` is
    Jupyter's per-notebook token: the gateway sends it upstream as
    ``Authorization: token <secret>`` and never shows it to the client."""

    id: int
    owner_user: str
    owner_team: str
    state: str
    host: str = ""
    port: int = 0
    secret: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "ready"


class Directory(Protocol):
    """The control plane as the gateway sees it.

    ``authenticate``, ``visitor``, ``notebook`` and ``resume`` may block (database); the
    gateway calls them from a worker thread and caches the first three for at most one
    second. ``touch`` must be cheap and non-blocking: it is called on the event loop.
    """

    def authenticate(self, token: str) -> Visitor | None:
        """The user a gpupool API token belongs to; None for an unknown, revoked or
        disabled one."""
        ...

    def visitor(self, user: str) -> Visitor | None:
        """The user named by a gateway session cookie, if they still exist and are enabled."""
        ...

    def notebook(self, nb_id: int) -> Target | None:
        """Where notebook ``nb_id`` is; None when there is no such live notebook."""
        ...

    def resume(self, nb_id: int, visitor: Visitor) -> None:
        """Queue the suspended notebook ``nb_id`` again (asked for by its owner)."""
        ...

    def touch(self, nb_id: int, at: float) -> None:
        """Activity on notebook ``nb_id`` was seen through the gateway at ``at`` (epoch s)."""
        ...
