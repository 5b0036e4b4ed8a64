"""Several processes of a single-node job (issue 15, item 3: `--procs-per-node 4` on one
node was ignored): each gets the distributed env of a multi-node job (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT, ...), on a real server with the local executor; one failing
rank fails the job and stops the others."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from server_harness import Server, make_server, submit, wait_for

KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
        "MASTER_PORT", "CUDA_VISIBLE_DEVICES", "PET_NPROC_PER_NODE")
# One write per line: jobs run with PYTHONUNBUFFERED=1, so a print of several arguments is
# several writes, and the ranks' writes interleave in the job's one log.
PRINT_ENV = ("import os\n"
             f"line = ' '.join(['rank', *(k + '=' + os.environ.get(k, '-') for k in {KEYS!r})])\n"
             "os.write(1, (line + '\\n').encode())\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("ranks"), "4xA100-80GB")


def final(server: Server, job_id: str) -> dict[str, object]:
    with server.client() as c:
        return wait_for(lambda: (v := c.get(f"/jobs/{job_id}").json())["phase"] in
                        ("succeeded", "failed", "cancelled") and v, timeout=60)


def log(server: Server, job_id: str) -> str:
    with server.client() as c:
        return str(c.get(f"/jobs/{job_id}/logs").json()["data"])


def test_four_processes_on_one_node_get_ranks_0_to_3(server: Server) -> None:
    with server.client() as c:
        job_id = submit(c, command=[sys.executable, "-c", PRINT_ENV], gpus=4,
                        procs_per_node=4, name="four")
    view = final(server, job_id)
    text = log(server, job_id)
    assert view["phase"] == "succeeded", (view, text)
    lines = [dict(kv.split("=", 1) for kv in x.split()[1:])
             for x in text.splitlines() if x.startswith("rank ")]
    assert sorted(int(x["RANK"]) for x in lines) == [0, 1, 2, 3], (text, view)
    for x in lines:
        assert (x["WORLD_SIZE"], x["LOCAL_WORLD_SIZE"], x["NODE_RANK"]) == ("4", "4", "0")
        assert x["LOCAL_RANK"] == x["RANK"]
        assert x["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and x["PET_NPROC_PER_NODE"] == "4"
    assert len({(x["MASTER_ADDR"], x["MASTER_PORT"]) for x in lines}) == 1
    assert lines[0]["MASTER_ADDR"] == "127.0.0.1" and lines[0]["MASTER_PORT"].isdigit()


def test_one_failing_rank_fails_the_job_and_stops_the_others(server: Server) -> None:
    script = ("import os, sys, time\n"
              "if os.environ['RANK'] == '1': sys.exit(7)\n"
              "time.sleep(120)\n")
    with server.client() as c:
        job_id = submit(c, command=[sys.executable, "-c", script], gpus=1, procs_per_node=3,
                        name="onefails", grace_period_s=2)
    view = final(server, job_id)
    assert view["phase"] == "failed" and view["exit_code"] == 7, view
    events = " ".join(e["message"] for e in view["events"])  # type: ignore[union-attr]
    assert "stopping the other 2 process(es)" in events


def test_a_single_process_job_gets_no_rank_variables(server: Server) -> None:
    with server.client() as c:
        job_id = submit(c, command=[sys.executable, "-c", PRINT_ENV], gpus=1, name="one")
    assert final(server, job_id)["phase"] == "succeeded"
    line = next(x for x in log(server, job_id).splitlines() if x.startswith("rank "))
    assert "RANK=- WORLD_SIZE=-" in line
