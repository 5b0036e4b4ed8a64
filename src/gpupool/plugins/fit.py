"""The resource-fit filter: CPU, memory, GPU model, and enough GPUs with the asked share."""

from __future__ import annotations

import numpy as np

from gpupool.core.cluster import BoolArray, ClusterState
from gpupool.core.framework import CycleState
from gpupool.core.reasons import cpu_text, labels_text, memory_text, nodes_text
from gpupool.core.request import Request


def fitting_gpus(state: ClusterState, request: Request) -> np.ndarray:
    """[nodes, gpus] mask of GPUs with at least the request's share (and GPU memory) free."""
    fit = state.gpu_left >= request.gpu_milli
    if request.gpu_memory_mib:
        fit &= state.gpu_mem_left >= request.gpu_memory_mib
    return fit


class FitFilter:
    """Keeps nodes where the request fits now. Memory only filters; it never scores."""

    name = "fit"

    def __init__(self) -> None:
        self._model_masks: dict[tuple[str, ...], BoolArray] = {}
        self._label_masks: dict[tuple[tuple[str, str], ...],
                                tuple[tuple[object, ...], BoolArray]] = {}

    def _model_mask(self, state: ClusterState, models: tuple[str, ...]) -> BoolArray:
        mask = self._model_masks.get(models)
        if mask is None:
            mask = self._model_masks[models] = state.model_mask(models)
        return mask

    def _label_mask(self, state: ClusterState, labels: tuple[tuple[str, str], ...]
                    ) -> BoolArray:
        # valid while the state's labels are the same tuple (a new node set is a new tuple)
        cached = self._label_masks.get(labels)
        if cached is not None and cached[0] is state.labels:
            return cached[1]
        mask = state.label_mask(labels)
        self._label_masks[labels] = (state.labels, mask)
        return mask

    def filter(
        self, state: ClusterState, request: Request, cycle: CycleState, candidates: BoolArray
    ) -> BoolArray:
        mask = candidates & (state.cpu_left >= request.cpu_milli)
        if request.node_labels:
            mask &= self._label_mask(state, request.node_labels)
        if request.memory_mib:
            mask &= state.mem_left >= request.memory_mib
        if request.num_gpus:
            mask &= self._model_mask(state, request.gpu_models)
            if request.num_gpus == 1 and not request.gpu_memory_mib:
                mask &= state.gpu_left.max(axis=1) >= request.gpu_milli
            else:
                mask &= fitting_gpus(state, request).sum(axis=1) >= request.num_gpus
        return mask

    def explain(
        self, state: ClusterState, request: Request, cycle: CycleState, candidates: BoolArray
    ) -> list[str]:
        """Each candidate node is counted once, under the first check it fails, in the order
        node labels, GPU model, free GPUs, CPU, memory."""
        fragments: list[str] = []
        remaining = candidates.copy()
        if request.node_labels:
            labelled = remaining & self._label_mask(state, request.node_labels)
            if not labelled.any():
                return [f"no node has {labels_text(request.node_labels)}"]
            remaining = labelled
        if request.num_gpus:
            model_ok = remaining & self._model_mask(state, request.gpu_models)
            noun = "/".join(request.gpu_models) or "GPUs"
            if not model_ok.any():
                what = f"no node has {noun}" if request.gpu_models else "no node has a GPU"
                return [what]
            fit_count = fitting_gpus(state, request).sum(axis=1)
            short = model_ok & (fit_count < request.num_gpus)
            if short.any():
                if request.is_sharing:
                    best = int(state.gpu_left[short].max())
                    if request.gpu_memory_mib and best >= request.gpu_milli:
                        detail = (f"under {request.gpu_memory_mib} MiB GPU memory free on "
                                  "each GPU with the share free")
                    else:
                        detail = ("no GPU with any share free" if best <= 0 else
                                  f"at most {best / 1000:g} of a GPU free on one GPU")
                        if request.gpu_memory_mib:
                            detail += (f" (or under {request.gpu_memory_mib} MiB GPU memory "
                                       "free)")
                else:
                    best = int(fit_count[short].max())
                    detail = "none free" if best == 0 else f"at most {best} free"
                fragments.append(f"{nodes_text(int(short.sum()), 'have')} {noun} but {detail}")
            remaining = model_ok & ~short
        cpu_short = remaining & (state.cpu_left < request.cpu_milli)
        if cpu_short.any():
            fragments.append(
                f"{nodes_text(int(cpu_short.sum()), 'lack')} {cpu_text(request.cpu_milli)}"
            )
        remaining &= ~cpu_short
        mem_short = remaining & (state.mem_left < request.memory_mib)
        if mem_short.any():
            fragments.append(
                f"{nodes_text(int(mem_short.sum()), 'lack')} {memory_text(request.memory_mib)}"
            )
        return fragments
