"""Plain-language reasons for tasks that fit nowhere: exact strings."""

from __future__ import annotations

import pytest

from builders import gpu, node, scheduler
from gpupool.core.reasons import memory_text, needs_text, nodes_text, unplaced_reason
from gpupool.core.request import Gang


def reason(nodes, request, policy="bestfit") -> str:
    decision = scheduler(policy, nodes).place(request)
    assert not decision.placed
    return decision.reason


MIXED = [
    node("a0", gpus=4, free=[1000, 0, 0, 0]),  # A100, 1 free
    node("a1", gpus=4, free=[1000, 1000, 0, 0], cpu_free=4),  # A100, 2 free, 4 cores
    node("a2", gpus=4, free=[0, 0, 0, 1000]),  # A100, 1 free
    node("a3", cpu=6, gpus=2),  # A100, 2 free, 6 cores
    node("v0", gpus=4, model="V100"),  # wrong model
    node("c0", cpu=64, gpus=0),  # no GPU
]


def test_two_whole_a100_reason():
    got = reason(MIXED, gpu(2, cpu=8, models=("A100",)))
    assert "needs 2 whole A100" in got
    assert "have A100 but at most 1 free" in got
    assert "lack 8 CPU" in got
    assert got == (
        "needs 2 whole A100, 8 CPU: 2 nodes have A100 but at most 1 free; 2 nodes lack 8 CPU"
    )


@pytest.mark.parametrize("policy", ["random", "fgd", "clustering"])
def test_reason_does_not_depend_on_policy(policy):
    got = reason(MIXED, gpu(2, cpu=8, models=("A100",)), policy)
    assert got.endswith("2 nodes have A100 but at most 1 free; 2 nodes lack 8 CPU")


@pytest.mark.parametrize(
    ("nodes", "request_", "expected"),
    [
        (MIXED, gpu(1, models=("H100",)), "needs 1 whole H100: no node has H100"),
        (
            [node("c0", gpus=0)],
            gpu(1, 500),
            "needs 0.5 of one GPU: no node has a GPU",
        ),
        (
            [node("a0", gpus=2, free=[0, 0]), node("a1", gpus=2, free=[1000, 0], cpu_free=1)],
            gpu(1, models=("A100",), cpu=2),
            "needs 1 whole A100, 2 CPU: 1 node has A100 but none free; 1 node lacks 2 CPU",
        ),
        (
            [node("a0", gpus=2, free=[300, 250]), node("a1", gpus=1, free=[100])],
            gpu(1, 500),
            "needs 0.5 of one GPU: 2 nodes have GPUs but at most 0.3 of a GPU free on one GPU",
        ),
        (
            [node("a0", gpus=2, gpu_mem_mib=8192, free=[1000, 300])],
            gpu(1, 500, gpu_mem_mib=16384),
            "needs 0.5 of one GPU with 16384 MiB: 1 node has GPUs but under 16384 MiB GPU "
            "memory free on each GPU with the share free",
        ),
        (
            [node("n0", cpu=2), node("n1", cpu=8, mem_gib=8), node("n2", cpu=16, mem_gib=4)],
            gpu(0, cpu=4, mem_gib=16),
            "needs 4 CPU, 16 GiB memory: 1 node lacks 4 CPU; 2 nodes lack 16 GiB memory",
        ),
        (
            [node("n0", cpu=1)],
            gpu(0, cpu=1.5),
            "needs 1.5 CPU: 1 node lacks 1.5 CPU",
        ),
        (
            # each node is counted once, under the first check it fails (GPUs before CPU)
            [node("n0", gpus=2, free=[1000, 0], cpu_free=1), node("n1", gpus=2, cpu_free=1)],
            gpu(2, cpu=8),
            "needs 2 whole GPUs, 8 CPU: 1 node has GPUs but at most 1 free; 1 node lacks 8 CPU",
        ),
        (
            [node("n0", gpus=2, free=[1000, 0]), node("n1", gpus=1, model="T4")],
            gpu(2),
            "needs 2 whole GPUs: 2 nodes have GPUs but at most 1 free",
        ),
    ],
)
def test_exact_reasons(nodes, request_, expected):
    assert reason(nodes, request_) == expected


def test_gang_reason_names_gang_and_member():
    nodes = [node("a", gpus=2), node("b", gpus=1, free=[0])]
    gang = Gang("train", (gpu(1, name="w0"), gpu(1, name="w1"), gpu(1, name="w2")))
    decision = scheduler("bestfit", nodes).place_gang(gang)
    assert decision.reason == (
        "gang train (3 tasks) cannot be placed together: task w2 needs 1 whole GPU: "
        "2 nodes have GPUs but none free"
    )


def test_gang_of_one_reason_is_plain():
    gang = Gang("solo", (gpu(1, name="w0"),))
    decision = scheduler("bestfit", [node("a", gpus=1, free=[0])]).place_gang(gang)
    assert decision.reason == "needs 1 whole GPU: 1 node has GPUs but none free"


@pytest.mark.parametrize(
    ("count", "verb", "text"),
    [
        (1, "have", "1 node has"),
        (3, "have", "3 nodes have"),
        (1, "lack", "1 node lacks"),
        (2, "lack", "2 nodes lack"),
        (1, "", "1 node"),
        (0, "", "0 nodes"),
    ],
)
def test_nodes_text(count, verb, text):
    assert nodes_text(count, verb) == text


def test_small_texts():
    assert memory_text(2048) == "2 GiB memory"
    assert memory_text(1500) == "1500 MiB memory"
    assert needs_text(gpu(0)) == "needs nothing"
    assert unplaced_reason(gpu(0, cpu=1), []) == "needs 1 CPU: no node passed the filters"


def test_explain_false_skips_the_explanation_but_still_fails():
    sched = scheduler("bestfit", [node("a", gpus=1, free=[0])])
    decision = sched.place(gpu(1, name="w0"), explain=False)
    assert not decision.placed
    assert decision.reason == "needs 1 whole GPU: no node passed the filters"
    assert sched.place(gpu(1, name="w0")).reason == (
        "needs 1 whole GPU: 1 node has GPUs but none free"
    )
