"""``gpupool queues`` counts every GPU a team's placed jobs hold: all node ranks of a
multi-node job (rows written as the job store writes them: rank 0 in ``node``/``gpus``, every
rank in ``ranks``), whole GPUs and shares. Rows are written directly in a real database; no
process is started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db_backends import BACKENDS, database
from gpupool.schemas.jobs import Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, User
from gpupool.server.services.cluster import held_gpus, list_queues
from gpupool.server.services.identity import Principal

T0 = 1_700_000_000.0


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from database(request.param, tmp_path)


def _team(db: Database, name: str, quota_gpus: int) -> tuple[int, int]:
    with db.session() as s:
        team = Team(name=name, quota_milli=quota_gpus * 1000, borrow_limit_milli=8000,
                    created_at=T0)
        s.add(team)
        s.flush()
        user = User(name=f"{name}-u", team_id=team.id, created_at=T0)
        s.add(user)
        s.flush()
        return team.id, user.id


def _job(db: Database, team: tuple[int, int], phase: Phase, node: str | None = None,
         gpus: list[int] | None = None, gpu_milli: int = 0,
         ranks: list[dict[str, Any]] | None = None, nodes: int = 1) -> None:
    spec = {"command": ["true"], "gpus": len(gpus or ()) or 0, "nodes": nodes}
    with db.session() as s:
        s.add(Job(name="j", team_id=team[0], user_id=team[1], queue="q", phase=phase.value,
                  spec=spec, node=node, gpus=gpus, gpu_milli=gpu_milli, ranks=ranks,
                  attempts=1 if node else 0, failures=0, created_at=T0))


def _admin(team: tuple[int, int]) -> Principal:
    return Principal(user_id=team[1], user="root", team_id=team[0], team="a", admin=True)


def test_a_multi_node_job_counts_the_gpus_of_every_rank(db: Database) -> None:
    a, b = _team(db, "a", quota_gpus=4), _team(db, "b", quota_gpus=0)
    ranks = [{"node": f"n{i}", "gpus": [0, 1, 2, 3]} for i in range(3)]
    _job(db, a, Phase.RUNNING, "n0", [0, 1, 2, 3], 1000, ranks, nodes=3)  # 3 nodes x 4
    _job(db, a, Phase.STARTING, "n3", [0], 1000)                         # one whole GPU
    _job(db, a, Phase.PENDING)                                           # holds nothing
    _job(db, b, Phase.RUNNING, "n3", [1], 500)                           # half a GPU
    _job(db, b, Phase.SUCCEEDED, "n3", [2], 1000)                        # ended: not counted
    queues = {q.name: q for q in list_queues(db, _admin(a))}
    assert queues["a"].used_gpus == 13
    assert queues["a"].borrowed_gpus == 9  # beyond its quota of 4
    assert (queues["a"].running, queues["a"].pending) == (2, 1)
    assert queues["b"].used_gpus == 0.5 and queues["b"].borrowed_gpus == 0.5
    assert (queues["b"].running, queues["b"].pending) == (1, 0)


def test_a_non_admin_sees_only_their_own_queue(db: Database) -> None:
    _team(db, "a", quota_gpus=1)
    b = _team(db, "b", quota_gpus=1)
    _job(db, b, Phase.RUNNING, "n0", [0, 1], 1000,
         [{"node": "n0", "gpus": [0, 1]}, {"node": "n1", "gpus": [0, 1]}], nodes=2)
    mine = Principal(user_id=b[1], user="b-u", team_id=b[0], team="b", admin=False)
    assert [(q.name, q.used_gpus) for q in list_queues(db, mine)] == [("b", 4)]


@pytest.mark.parametrize(("gpus", "ranks", "held"), [
    (None, None, 0),
    ([], None, 0),
    ([0, 1], None, 2),
    ([0, 1], [{"node": "n0", "gpus": [0, 1]}, {"node": "n1", "gpus": [2, 3]}], 4),
    ([0], [{"node": "n0", "gpus": [0]}, {"node": "n1", "gpus": []}], 1),  # as written
])
def test_held_gpus(gpus: list[int] | None, ranks: list[dict[str, Any]] | None,
                   held: int) -> None:
    assert held_gpus(gpus, ranks) == held
