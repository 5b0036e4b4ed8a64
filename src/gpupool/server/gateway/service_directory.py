"""What the gateway needs to know about inference services, as one narrow protocol.

The server implements ``ServiceDirectory`` over its database and its service controller; the
gateway's tests use a fake. Everything the gateway may learn about a service, and everything
it tells the control plane about traffic, passes through these methods.

A replica is reached over a Unix socket (``uds``): gpupool's replica front listens there,
inside the replica's sandbox, and relays to the service's own port in the sandbox's private
network, so no other workload can reach the replica without the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

UNREACHED_HEADER = "x-gpupool-unreached"
"""Set (to ``1``) by the replica front on the 502 it answers when the service's own port
refused the connection: the request never reached the service, so any method may be retried
on another replica."""


@dataclass(frozen=True)
class Replica:
    """One ready replica. ``id`` is its job id; ``uds`` the path of the Unix socket its front
    listens on; ``draining``: being removed, so new requests go elsewhere while another
    replica is ready (requests in flight finish)."""

    id: int
    uds: str
    draining: bool = False


@dataclass(frozen=True)
class ServiceTarget:
    """A service as the gateway routes it. ``public``: no credential is needed; else a gpupool
    token of ``team`` (or an admin's), or one of the service's API keys. ``replicas``: the
    ready ones only (may be empty: scaled to zero, or starting). ``wake_timeout_s``: how long
    a request waits for a first ready replica before it is answered 503."""

    name: str
    team: str
    public: bool
    replicas: tuple[Replica, ...] = field(default=())
    wake_timeout_s: float = 60.0


@dataclass(frozen=True)
class Load:
    """Traffic the gateway saw for one service: requests in flight now, by replica id (those
    waiting for a replica under key 0), and how many requests it has finished since it
    started (a counter; the controller takes differences for a rate)."""

    inflight: dict[int, int]
    finished: int


class ServiceDirectory(Protocol):
    """The control plane as the gateway's service routes see it.

    ``service``, ``key_valid`` and ``wake`` may block (database); the gateway calls them from
    a worker thread and caches ``service`` and ``key_valid`` for at most one second (so a
    revoked key stops working within a second). ``report`` must be cheap and non-blocking:
    it is called on the event loop.
    """

    def service(self, name: str) -> ServiceTarget | None:
        """The service named ``name``; None when there is none."""
        ...

    def key_valid(self, name: str, key: str) -> bool:
        """Whether ``key`` is a live (not revoked) API key of service ``name``."""
        ...

    def wake(self, name: str) -> None:
        """A request is waiting for service ``name``, which has no ready replica: make sure
        at least one is wanted (scale from zero)."""
        ...

    def report(self, name: str, load: Load) -> None:
        """The gateway's traffic figures for service ``name`` (called at least every 0.5 s
        while it has traffic, and once when it drops to none)."""
        ...
