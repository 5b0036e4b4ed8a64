"""GPU shares on MIG instances (issue 8, mechanism 1), through the server's Launcher and the
real local executor. No MIG-capable card here: the card's MIG layout is DECLARED (what
`nvml_mig_instances` would read through NVML is given to the Launcher directly), so this
shows the launcher's part: which instance a job gets, that it is selected by uuid, that it is
held until the attempt is released (a server restart included), and the fallback when no
instance holds the share."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpupool.core.cluster import Allocation, ClusterState, GpuSpec, NodeSpec
from gpupool.core.request import Request
from gpupool.executors.base import Handle
from gpupool.executors.inventory import LocalInventory, MigInstance
from gpupool.executors.local import LocalExecutor
from gpupool.schemas.jobs import JobSpec
from gpupool.server.launcher import MIG_CLAIMS, Launcher
from gpupool.server.sharing import Offer, Sharing


def instance(uuid: str, profile: str, memory_mib: int, slices: int) -> MigInstance:
    return MigInstance(0, f"MIG-{uuid}", profile, memory_mib, slices, 7)


LAYOUT = (instance("1a", "1g.10gb", 9728, 1), instance("1b", "1g.10gb", 9728, 1),
          instance("2a", "2g.20gb", 19968, 2), instance("3a", "3g.40gb", 40192, 3))
NODE = NodeSpec("n", 8000, 64000, (GpuSpec("A100", 81920),))


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    yield LocalExecutor()


def launcher(tmp_path: Path, executor: LocalExecutor, state: ClusterState) -> Launcher:
    inventory = LocalInventory((NODE,), {"n": (0,)}, "nvml")
    offer = Offer("auto", {0: LAYOUT}, "nvidia-cuda-mps-control not found", None,
                  "no C compiler")
    return Launcher(tmp_path / "runs", executor, inventory, state, sharing=Sharing(offer))


def start(launcher: Launcher, state: ClusterState, job: int, gpus: float
          ) -> tuple[list[Handle], str | None, Allocation]:
    milli = round(gpus * 1000)
    alloc = state.allocate(0, (0,), Request(str(job), num_gpus=1, gpu_milli=milli))
    spec = JobSpec(command=["sh", "-c", 'echo "cvd=$CUDA_VISIBLE_DEVICES"'], gpus=gpus)
    handles, text = launcher.start(job, f"j{job}", 1, "default", (alloc,), spec)
    return handles, text, alloc


def printed(launcher: Launcher, executor: LocalExecutor, handles: list[Handle], job: int) -> str:
    deadline = time.time() + 30
    while executor.poll(handles[0]) is None:
        assert time.time() < deadline, "the job did not end"
        time.sleep(0.02)
    return Path(launcher.log_path(job)).read_text().strip()


def test_jobs_get_the_smallest_free_instance_and_release_it(
    tmp_path: Path, executor: LocalExecutor
) -> None:
    state = ClusterState([NODE])
    mig = launcher(tmp_path, executor, state)
    assert mig.mechanisms == ["mig"]

    handles, text, _ = start(mig, state, 1, 0.1)
    assert text == "mig 1g.10gb (MIG-1a)"
    assert printed(mig, executor, handles, 1) == "cvd=MIG-1a"  # selected by uuid
    assert (mig.run_dir(1, 1) / MIG_CLAIMS).read_text() == "MIG-1a\n"

    assert start(mig, state, 2, 0.1)[1] == "mig 1g.10gb (MIG-1b)"
    assert start(mig, state, 3, 0.1)[1] == "mig 2g.20gb (MIG-2a)"  # rounded up: 1g all taken
    # 0.5 of the card is more than any instance (3g.40gb: 3/7 and 40,192 MiB): say why.
    handles, text, _ = start(mig, state, 4, 0.5)
    assert text == ("none (interposer unavailable: no C compiler; mig: no free MIG instance of "
                    "GPU 0 holds 0.5 of the compute and 40960 MiB)")
    assert printed(mig, executor, handles, 4) == "cvd=0"  # the card, not an instance
    assert mig.mig_in_use() == {"MIG-1a": (1, 1), "MIG-1b": (2, 1), "MIG-2a": (3, 1)}

    mig.drop_share_file(1, 1)  # the attempt ended
    assert not (mig.run_dir(1, 1) / MIG_CLAIMS).exists()
    assert "MIG-1a" not in mig.mig_in_use()

    restarted = launcher(tmp_path, executor, state)  # a server restart: claims survive
    assert restarted.mig_in_use() == {"MIG-1b": (2, 1), "MIG-2a": (3, 1)}
    assert start(restarted, state, 5, 0.1)[1] == "mig 1g.10gb (MIG-1a)"
    # The next 0.1 takes the 3g.40gb: the scheduler packs by fractions, not by instances.
    assert start(restarted, state, 6, 0.1)[1] == "mig 3g.40gb (MIG-3a)"


def test_a_failed_launch_releases_its_instance(tmp_path: Path, executor: LocalExecutor) -> None:
    state = ClusterState([NODE])
    mig = launcher(tmp_path, executor, state)
    alloc = state.allocate(0, (0,), Request("1", num_gpus=1, gpu_milli=100))
    spec = JobSpec(command=["sh", "-c", "true"], gpus=0.1, workdir=str(tmp_path / "missing"))
    with pytest.raises(Exception, match="missing"):
        mig.start(1, "j1", 1, "default", (alloc,), spec)
    assert mig.mig_in_use() == {}
