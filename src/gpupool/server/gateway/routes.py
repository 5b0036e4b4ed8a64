"""What the gateway fronts for people, as a table: each ``Mount`` is one kind of thing
reached at ``/<prefix>/<key>/...`` (notebooks at ``/nb/<id>/``), with how to find it, who
may enter and where sign-in lands. The app builds its mount routes from ``MOUNTS``.

Inference services (``/svc/<name>/...``) are the gateway's second family of routes and are
not a row here: they have no cookies and no sign-in (API credentials only), are keyed by
name, and balance each request over replicas; ``svc_endpoints`` builds them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gpupool.server.gateway.cache import CachedDirectory
from gpupool.server.gateway.directory import Target, Visitor

RESERVED = "_gpupool"  # /<prefix>/<key>/_gpupool/... is the gateway's own, never forwarded


def personal(visitor: Visitor, target: Target) -> bool:
    """Only the owner, and admins, may enter (notebooks are personal: a teammate may not)."""
    return visitor.admin or visitor.user == target.owner_user


@dataclass(frozen=True)
class Mount:
    """One row of the table.

    ``lookup`` finds the target for a key (None: no such live thing); ``resume`` (optional)
    asks for a suspended one to be started again, on behalf of its owner; ``landing`` is the
    path under the mount that sign-in redirects to; ``dropped_cookies``: name prefixes of
    cookies the upstream sets that never reach the client (a notebook: Jupyter's login
    cookie, which would open Jupyter's port without the gateway, as cookies ignore ports).
    """

    prefix: str
    landing: str
    lookup: Callable[[CachedDirectory, int], Awaitable[Target | None]]
    may_enter: Callable[[Visitor, Target], bool]
    resume: Callable[[CachedDirectory, int, Visitor], Awaitable[None]] | None = None
    dropped_cookies: tuple[str, ...] = ()

    def base(self, key: int) -> str:
        """The mount's path prefix for ``key``, with its trailing slash: ``/nb/7/``."""
        return f"/{self.prefix}/{key}/"

    def cookie_name(self, key: int) -> str:
        """The session cookie for ``key``: ``gpupool_nb_7``."""
        return f"gpupool_{self.prefix}_{key}"

    def pattern(self) -> str:
        """The Starlette path pattern of the mount's root, without trailing slash."""
        return f"/{self.prefix}/{{key:int}}"


NOTEBOOKS = Mount(prefix="nb", landing="lab", lookup=CachedDirectory.notebook,
                  may_enter=personal, resume=CachedDirectory.resume,
                  dropped_cookies=("username-",))  # Jupyter's: username-<host>-<port>

MOUNTS: tuple[Mount, ...] = (NOTEBOOKS,)
