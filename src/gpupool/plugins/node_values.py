"""Per request shape, the last value computed for every node, recomputed only for nodes whose
state version changed since: the pattern that keeps memoised policies fast."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool.core.cluster import ClusterState, IntArray
from gpupool.core.frag import NodeKey


class NodeValuesByShape:
    """``values(state, shape, nodes, compute)`` returns ``compute(node_key)`` for each of
    ``nodes``, calling ``compute`` only for nodes that changed since the last call for the
    same ``shape`` (``compute`` must depend on the node key alone)."""

    def __init__(self, num_nodes: int, dtype: npt.DTypeLike) -> None:
        self._n = num_nodes
        self._dtype = dtype
        self._values: dict[Hashable, npt.NDArray[Any]] = {}
        self._versions: dict[Hashable, IntArray] = {}

    def clear(self) -> None:
        self._values.clear()
        self._versions.clear()

    def values(
        self,
        state: ClusterState,
        shape: Hashable,
        nodes: IntArray,
        compute: Callable[[NodeKey], float],
    ) -> npt.NDArray[Any]:
        values = self._values.get(shape)
        if values is None:
            values = self._values[shape] = np.zeros(self._n, dtype=self._dtype)
            self._versions[shape] = np.full(self._n, -1, dtype=np.int64)
        versions = self._versions[shape]
        stale = nodes[versions[nodes] != state.version[nodes]]
        if len(stale):
            for node in stale.tolist():
                values[node] = compute(state.node_key(node))
            versions[stale] = state.version[stale]
        return values[nodes]
