"""A team's fair-share weight, cohort and lending limit: the wire contract (bounds, unknown
fields refused, explicit null clears), the admin services on real SQLite and PostgreSQL, the
HTTP API, and `gpupool admin team create|set|list`.

Tiers: the contract and the services in this process; HTTP on the middle tier (inprocess_api:
the real app and Controller in this process, with the queue-policy settings `gpupool up`
is started with below); the CLI as a subprocess against one real `gpupool up` (started with
the queue-policy options ``--queue-order fifo --no-backfill --fairshare-half-life 2d``),
since the command is what is tested."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from db_backends import BACKENDS, database
from gpupool.schemas.admin import TeamCreate, TeamUpdate
from gpupool.server.db.database import Database
from gpupool.server.db.tables import AuditEvent, Team, User
from gpupool.server.services import admin
from gpupool.server.services.identity import Principal
from inprocess_api import InProcessServer
from server_harness import Server, make_server

# ---- the wire contract --------------------------------------------------------------------


def test_create_defaults_and_bounds() -> None:
    team = TeamCreate(name="a")
    assert (team.weight, team.cohort, team.lend_limit_gpus) == (1.0, None, None)
    fine = TeamCreate(name="a", weight=1000, cohort="lab.1", lend_limit_gpus=0)
    assert (fine.weight, fine.cohort, fine.lend_limit_gpus) == (1000, "lab.1", 0)
    # at their defaults they are not sent: the body a server before fair share accepts
    assert team.model_dump(mode="json") == {"name": "a", "quota_gpus": 0,
                                            "borrow_limit_gpus": 0}
    assert fine.model_dump(mode="json")["lend_limit_gpus"] == 0
    for field, bad in [("weight", 0), ("weight", -1), ("weight", 1000.5), ("weight", math.inf),
                       ("weight", math.nan), ("weight", True), ("weight", None),
                       ("cohort", ""), ("cohort", "a b"), ("cohort", "-x"), ("cohort", "x" * 101),
                       ("lend_limit_gpus", -0.5), ("lend_limit_gpus", math.inf),
                       ("lend_limit_gpus", False), ("lend_limit_gpus", 100001),
                       ("lends", 1)]:
        with pytest.raises(ValidationError) as caught:
            TeamCreate.model_validate({"name": "a", field: bad})
        assert caught.value.errors()[0]["loc"][0] == field, (field, bad)


def test_update_tells_left_out_from_null() -> None:
    assert TeamUpdate().model_fields_set == set()
    cleared = TeamUpdate.model_validate({"cohort": None, "lend_limit_gpus": None})
    assert cleared.model_fields_set == {"cohort", "lend_limit_gpus"}
    for field, bad in [("weight", 0), ("weight", 1e9), ("cohort", "a/b"),
                       ("lend_limit_gpus", -1), ("name", "a")]:
        with pytest.raises(ValidationError):
            TeamUpdate.model_validate({field: bad})


# ---- the services -------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from database(request.param, tmp_path)


@pytest.fixture
def root(db: Database) -> Principal:
    with db.session() as s:
        team = Team(name="default", quota_milli=0, borrow_limit_milli=0, created_at=0.0)
        s.add(team)
        s.flush()
        user = User(name="root", team_id=team.id, admin=True, created_at=0.0)
        s.add(user)
        s.flush()
        return Principal(user_id=user.id, user="root", team_id=team.id, team="default",
                         admin=True)


def _audit(db: Database) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(AuditEvent.detail).order_by(AuditEvent.id)))


def test_services_create_change_list_and_delete(db: Database, root: Principal) -> None:
    made = admin.create_team(db, root, TeamCreate(name="vision", weight=3, cohort="lab",
                                                  lend_limit_gpus=1.5))
    assert (made.weight, made.cohort, made.lend_limit_gpus) == (3, "lab", 1.5)
    admin.create_team(db, root, TeamCreate(name="nlp", cohort="lab"))
    listed = {t.name: t for t in admin.list_teams(db, root)}
    assert (listed["nlp"].weight, listed["nlp"].lend_limit_gpus) == (1.0, None)
    assert listed["default"].weight == 1.0 and listed["default"].cohort is None
    assert listed["vision"] == made
    # a weight alone keeps the cohort and the limit; an explicit null clears them
    changed = admin.update_team(db, root, "vision", TeamUpdate(weight=0.25))
    assert (changed.weight, changed.cohort, changed.lend_limit_gpus) == (0.25, "lab", 1.5)
    changed = admin.update_team(db, root, "vision",
                                TeamUpdate.model_validate({"lend_limit_gpus": None}))
    assert (changed.cohort, changed.lend_limit_gpus) == ("lab", None)
    changed = admin.update_team(db, root, "vision", TeamUpdate.model_validate(
        {"cohort": None, "lend_limit_gpus": 0}))
    assert (changed.weight, changed.cohort, changed.lend_limit_gpus) == (0.25, None, 0)
    with db.session() as s:
        row = s.scalar(select(Team).where(Team.name == "vision"))
        assert row is not None and (row.weight, row.cohort, row.lend_limit_milli) == (0.25,
                                                                                      None, 0)
    details = _audit(db)
    assert details[0].endswith("weight 3, cohort lab, lends at most 1.5 GPUs")
    assert details[1].endswith("weight 1, cohort lab, lends all unused quota")
    assert details[2:] == ["weight 0.25", "lends all unused quota",
                           "no cohort, lend limit 0 GPUs"]
    admin.delete_team(db, root, "nlp")
    with db.session() as s:
        gone = s.scalar(select(Team).where(Team.deleted_at.is_not(None)))
        assert gone is not None and gone.cohort is None  # out of its cohort


# ---- HTTP, in process ---------------------------------------------------------------------


def test_http_create_update_and_refusals(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=1, cards=2, queue_order="fifo", backfill=False,
                             fairshare_half_life_s=2 * 86400)
    c = server.admin
    made = c.post("/teams", json={"name": "h1", "weight": 2.5, "cohort": "c1",
                                  "lend_limit_gpus": 1})
    assert made.status_code == 201, made.text
    assert {k: made.json()[k] for k in ("weight", "cohort", "lend_limit_gpus")} == {
        "weight": 2.5, "cohort": "c1", "lend_limit_gpus": 1}
    plain = c.post("/teams", json={"name": "h2"})  # an old client's body still works
    assert plain.status_code == 201 and plain.json()["weight"] == 1
    patched = c.patch("/teams/h1", json={"cohort": None})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["cohort"], patched.json()["lend_limit_gpus"]) == (None, 1)
    for body, field in [({"name": "h3", "weight": 0}, "weight"),
                        ({"name": "h3", "weight": 1001}, "weight"),
                        ({"name": "h3", "cohort": "no way"}, "cohort"),
                        ({"name": "h3", "lend_limit_gpus": -1}, "lend_limit_gpus"),
                        ({"name": "h3", "user_weight": 2}, "user_weight")]:
        refused = c.post("/teams", json=body)
        assert refused.status_code == 422, body
        assert field in refused.json()["detail"], refused.json()
    assert c.patch("/teams/h1", json={"weight": -2}).status_code == 422
    assert "h3" not in {t["name"] for t in c.get("/teams").json()}


# ---- a real server: the CLI ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("weights"), "2xA100-80GB",
                           extra_args=("--queue-order", "fifo", "--no-backfill",
                                       "--fairshare-half-life", "2d"))


def gpupool(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args], env=server.env,
                          capture_output=True, text=True, timeout=120)


def _teams(server: Server) -> dict[str, dict[str, Any]]:
    with server.client() as c:
        return {t["name"]: t for t in c.get("/teams").json()}


def test_cli_create_set_and_list(server: Server) -> None:
    done = gpupool(server, "admin", "team", "create", "c-vision", "--weight", "3",
                   "--cohort", "lab", "--lend-limit", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("team c-vision: quota 0 GPUs, borrow limit 0 GPUs, weight 3, "
                                   "cohort lab (lends at most 2 GPUs)")
    assert _teams(server)["c-vision"]["lend_limit_gpus"] == 2
    again = gpupool(server, "admin", "team", "set", "c-vision", "--lend-limit", "all",
                    "--json")
    assert again.returncode == 0, again.stderr
    shown = json.loads(again.stdout)
    assert (shown["weight"], shown["cohort"], shown["lend_limit_gpus"]) == (3, "lab", None)
    alias = gpupool(server, "admin", "team", "update", "c-vision", "--cohort", "",
                    "--weight", "0.5")
    assert alias.returncode == 0, alias.stderr
    assert alias.stdout.strip().endswith("weight 0.5")  # no cohort any more
    limited = gpupool(server, "admin", "team", "set", "c-vision", "--default-run-limit", "30m")
    assert limited.returncode == 0, limited.stderr
    assert limited.stdout.strip().endswith("weight 0.5, default run limit 30m")
    assert _teams(server)["c-vision"]["default_run_limit_s"] == 1800
    listing = gpupool(server, "admin", "team", "list")
    assert listing.returncode == 0, listing.stderr
    header = listing.stdout.splitlines()[0].split()
    assert header[-13:-7] == ["WEIGHT", "COHORT", "LENDS", "GPUS", "RUN", "LIMIT"]
    row = next(line.split() for line in listing.stdout.splitlines()
               if line.startswith("c-vision "))
    assert row[-7:] == ["0.5", "-", "-", "30m", "-", "-", "-"]  # then its notebook settings
    as_json = json.loads(gpupool(server, "admin", "team", "list", "--json").stdout)
    assert {"weight", "cohort", "lend_limit_gpus", "default_run_limit_s"} <= set(as_json[0])
    back = gpupool(server, "admin", "team", "set", "c-vision", "--default-run-limit", "default")
    assert back.returncode == 0, back.stderr
    assert _teams(server)["c-vision"]["default_run_limit_s"] is None


@pytest.mark.parametrize(("args", "says"), [
    (("create", "c-bad", "--weight", "0"), "--weight: input should be greater than 0"),
    (("create", "c-bad", "--cohort", "a b"), "--cohort: string should match pattern"),
    (("create", "c-bad", "--lend-limit", "lots"), "--lend-limit 'lots': give a number"),
    (("create", "c-bad", "--lend-limit", "-1"), "--lend-limit: input should be greater than"),
    (("create", "c-bad", "--default-run-limit", "soon"), "--default-run-limit: 'soon' is not"),
    (("create", "c-bad", "--default-run-limit", "0"),
     "--default-run-limit: input should be greater than 0"),
    (("set", "c-bad", "--weight", "2000"), "--weight: input should be less than or equal"),
    (("set", "c-bad"), "nothing to change"),
    (("set", "nobody", "--weight", "2"), "no team named 'nobody'"),
])
def test_cli_names_the_bad_option(server: Server, args: tuple[str, ...], says: str) -> None:
    done = gpupool(server, "admin", "team", *args)
    assert done.returncode == 2, done.stdout
    assert says in " ".join(done.stderr.split()), done.stderr
    assert "c-bad" not in _teams(server)
