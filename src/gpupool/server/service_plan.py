"""What the service controller does to one service in one tick, as a pure function.

Given the service's spec generation, how many replicas it wants, and its live replicas (with
what the board knows: ready, draining since when, requests in flight), ``plan`` says which
replicas to start, which to drain (no new requests) and which to stop. Rules:

- replicas of the current generation: start as many as are missing; of a surplus, stop the
  ones not ready yet first (they serve nothing), then drain the newest ready ones;
- replicas of older generations (a rolling update): those not ready are stopped at once;
  ready ones keep serving until enough current ones are ready — of them, only
  ``desired - ready current`` are kept, the rest drained — so traffic moves to the new
  spec as it becomes ready and never to nothing; a new spec that never gets ready leaves
  the old replicas serving;
- a draining replica is stopped once nothing is in flight on it and the gateway has had
  ``DRAIN_SETTLE_S`` to notice (its directory cache lives one second), or after
  ``DRAIN_TIMEOUT_S`` whatever is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DRAIN_SETTLE_S = 1.5
DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ReplicaRow:
    """A live replica (a job of kind service, not ended, not asked to stop)."""

    id: int
    generation: int
    ready: bool = False
    draining_since: float | None = None
    inflight: int = 0


@dataclass
class Actions:
    start: int = 0
    drain: list[int] = field(default_factory=list)
    stop: list[int] = field(default_factory=list)


def plan(generation: int, desired: int, replicas: list[ReplicaRow], now: float) -> Actions:
    """This tick's actions for one service (see the module docstring); ``now`` is on the
    board's clock."""
    actions = Actions()
    active: list[ReplicaRow] = []
    for replica in replicas:
        if replica.draining_since is None:
            active.append(replica)
            continue
        waited = now - replica.draining_since
        if waited >= DRAIN_TIMEOUT_S or (waited >= DRAIN_SETTLE_S and replica.inflight == 0):
            actions.stop.append(replica.id)
    current = [r for r in active if r.generation == generation]
    old = [r for r in active if r.generation != generation]

    actions.start = max(0, desired - len(current))
    surplus = len(current) - desired
    if surplus > 0:
        not_ready = sorted((r for r in current if not r.ready), key=lambda r: -r.id)
        for replica in not_ready[:surplus]:
            actions.stop.append(replica.id)
        surplus -= min(surplus, len(not_ready))
        ready = sorted((r for r in current if r.ready), key=lambda r: -r.id)
        actions.drain.extend(r.id for r in ready[:surplus])

    ready_current = sum(1 for r in current if r.ready)
    keep_old = max(0, desired - ready_current)
    old_ready = sorted((r for r in old if r.ready), key=lambda r: r.id)
    actions.stop.extend(r.id for r in old if not r.ready)
    actions.drain.extend(r.id for r in old_ready[keep_old:])
    return actions
