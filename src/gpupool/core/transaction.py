"""A Statement: allocations made tentatively, then committed together or all undone.

Borrowed from Volcano's Statement. It is what makes a gang all-or-nothing: members are
allocated one by one on the live state (so later members see earlier ones), and ``discard``
restores the state, including plugins' own bookkeeping, exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpupool.core.cluster import Allocation, ClusterState
from gpupool.core.framework import ReservePlugin
from gpupool.core.request import Request


class Statement:
    def __init__(self, state: ClusterState, reserve_plugins: Sequence[ReservePlugin]) -> None:
        self._state = state
        self._plugins = tuple(reserve_plugins)
        self._allocations: list[Allocation] = []
        self._closed = False

    @property
    def allocations(self) -> tuple[Allocation, ...]:
        return tuple(self._allocations)

    def allocate(self, node: int, gpus: tuple[int, ...], request: Request) -> Allocation:
        """Allocate on the state and run every reserve plugin; undone by ``discard``."""
        if self._closed:
            raise RuntimeError("statement already committed or discarded")
        allocation = self._state.allocate(node, gpus, request)
        self._allocations.append(allocation)
        for plugin in self._plugins:
            plugin.reserve(self._state, allocation)
        return allocation

    def discard(self) -> None:
        """Undo every allocation, newest first; the state is as before the statement."""
        for allocation in reversed(self._allocations):
            for plugin in reversed(self._plugins):
                plugin.unreserve(self._state, allocation)
            self._state.release(allocation)
        self._allocations.clear()
        self._closed = True

    def commit(self) -> tuple[Allocation, ...]:
        self._closed = True
        return tuple(self._allocations)
