"""Required node labels (a job in a container image needs a node labelled
``gpupool.io/images=podman``): with every policy the scheduler places such a request only on
labelled nodes, says why when none is free or none exists, and judges "never fits" by them;
a request without labels still goes anywhere. The server maps ``image`` to that label."""

from __future__ import annotations

import pytest

from gpupool.core.capacity import NEVER_FITS, holders, never_fits
from gpupool.core.cluster import ClusterState, GpuSpec, NodeSpec
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.schemas.image_ref import IMAGES_LABEL
from gpupool.schemas.jobs import JobSpec
from gpupool.server.active import to_request

A100 = GpuSpec("A100", 81920)
IMAGES = ((IMAGES_LABEL, "podman"),)


def cluster(labelled: tuple[str, ...] = ("c",)) -> ClusterState:
    return ClusterState([
        NodeSpec(name, 16000, 65536, (A100,) * 2,
                 labels={IMAGES_LABEL: "podman"} if name in labelled else {"rack": "r1"})
        for name in ("a", "b", "c")])


@pytest.mark.parametrize("policy", ["gpupool", "dotprod", "bestfit", "packing", "random"])
def test_a_labelled_request_lands_only_on_labelled_nodes(policy: str) -> None:
    state = cluster()
    scheduler = Scheduler(state, build_profile(policy, state, PolicyContext()))
    for _ in range(4):  # 2 GPUs at 0.5 each on the one labelled node, then nothing
        decision = scheduler.place(Request("img", num_gpus=1, gpu_milli=500,
                                           node_labels=IMAGES))
        assert decision.placed and state.names[decision.allocations[0].node] == "c"
    full = scheduler.place(Request("img", num_gpus=1, gpu_milli=500, node_labels=IMAGES))
    assert not full.placed
    assert "the label gpupool.io/images=podman" in full.reason
    plain = scheduler.place(Request("host", num_gpus=1))
    assert plain.placed and state.names[plain.allocations[0].node] in ("a", "b")


def test_no_labelled_node_is_said_plainly_and_never_fits() -> None:
    state = cluster(labelled=())
    scheduler = Scheduler(state, build_profile("gpupool", state, PolicyContext()))
    request = Request("img", num_gpus=1, node_labels=IMAGES)
    decision = scheduler.place(request)
    assert not decision.placed
    assert "no node has the label gpupool.io/images=podman" in decision.reason
    assert holders(state, request) == 0
    why = never_fits(state, request)
    assert why is not None and why.startswith(NEVER_FITS)
    assert "no node has the label gpupool.io/images=podman" in why
    assert never_fits(cluster(), request) is None


def test_a_job_with_an_image_asks_for_the_images_label_and_one_without_does_not() -> None:
    with_image = to_request(1, JobSpec(command=["true"], image="localhost/x:1"), "q", ())
    assert with_image.node_labels == IMAGES
    assert to_request(2, JobSpec(command=["true"]), "q", ()).node_labels == ()
    assert with_image.shape != to_request(3, JobSpec(command=["true"]), "q", ()).shape
