"""The torchrun-style environment of distributed jobs' processes."""

from __future__ import annotations

import pytest

from gpupool.server.dist_env import distributed_env


def test_per_rank_processes_get_consistent_ranks():
    envs = [distributed_env("10.0.0.1", 29400, 2, node, 2, local, 2)
            for node in range(2) for local in range(2)]
    assert [e["RANK"] for e in envs] == ["0", "1", "2", "3"]
    assert {e["WORLD_SIZE"] for e in envs} == {"4"}
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1", "0", "1"]
    assert [e["NODE_RANK"] for e in envs] == ["0", "0", "1", "1"]
    assert {(e["MASTER_ADDR"], e["MASTER_PORT"], e["LOCAL_WORLD_SIZE"]) for e in envs} == {
        ("10.0.0.1", "29400", "2")}


def test_launcher_form_tells_torchrun_its_options():
    env = distributed_env("10.0.0.1", 29400, 4, 3, 1, 0, 8)
    assert env["PET_NNODES"] == "4" and env["PET_NODE_RANK"] == "3"
    assert env["PET_NPROC_PER_NODE"] == "8"
    assert env["RANK"] == "3" and env["WORLD_SIZE"] == "4"


@pytest.mark.parametrize(("node", "local"), [(2, 0), (-1, 0), (0, 2)])
def test_out_of_range_ranks_are_refused(node, local):
    with pytest.raises(ValueError, match="rank out of range"):
        distributed_env("a", 1, 2, node, 2, local, 0)
