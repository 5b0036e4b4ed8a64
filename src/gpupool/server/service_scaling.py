"""How many replicas a service wants: the autoscaling rule, as a pure object.

Each tick the controller gives ``Autoscaler.desired`` the requests in flight at the gateway
(on replicas and waiting for one) and whether a request woke the service lately. The
recommendation is ``ceil(inflight / target_inflight)``, at least 1 while a request waits,
clamped to ``[min, max]``. Scaling up follows the recommendation at once; scaling down takes
the highest recommendation of the last ``cooldown_s`` seconds (Kubernetes' HPA calls this
the stabilisation window), so a service shrinks only after its load has stayed lower for a
whole cooldown, and never flaps between ticks.
"""

from __future__ import annotations

import math
from collections import deque

from gpupool.schemas.services import ServiceSpec

WAKE_HOLD_S = 5.0
"""A wake (a request that found no ready replica) counts as demand for this long."""


def recommend(spec: ServiceSpec, inflight: int, woken: bool) -> int:
    """The replicas this load needs right now, within ``[min, max]``."""
    want = math.ceil(inflight / spec.scaling.target_inflight) if inflight > 0 else 0
    if woken:
        want = max(want, 1)
    return max(spec.replicas.min, min(spec.replicas.max, want))


class Autoscaler:
    """The recommendations of recent ticks, per service (see the module docstring)."""

    def __init__(self) -> None:
        self._history: dict[str, deque[tuple[float, int]]] = {}

    def desired(self, name: str, spec: ServiceSpec, inflight: int, woken_at: float | None,
                now: float) -> int:
        """The replicas service ``name`` should have at ``now`` (seconds, monotonic)."""
        woken = woken_at is not None and now - woken_at < WAKE_HOLD_S
        want = recommend(spec, inflight, woken)
        history = self._history.setdefault(name, deque())
        history.append((now, want))
        window = spec.scaling.cooldown_s
        while history and now - history[0][0] > window:
            history.popleft()
        held = max(w for _, w in history) if history else want
        return max(spec.replicas.min, min(spec.replicas.max, held))

    def forget(self, name: str) -> None:
        self._history.pop(name, None)

    def reset(self, name: str) -> None:
        """The spec changed (its min/max may have): start the window afresh."""
        self._history.pop(name, None)
