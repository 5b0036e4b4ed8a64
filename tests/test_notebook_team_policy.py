"""A team's notebook policy: its default idle timeout, the longest idle timeout its notebooks
may ask for and their longest run (API ``notebook_idle_timeout_s``,
``notebook_max_idle_timeout_s``, ``notebook_max_lifetime_s``; `gpupool admin team
create|set --notebook-idle-timeout|--notebook-max-idle-timeout|--notebook-max-lifetime`;
null / ``default``: the server's ``--notebook-*`` settings), and revision 0011.

Tiers: the in-process server (the real API and controller, a scripted executor, a fake clock,
the notebook watch with Jupyter's answers scripted, as tests/test_notebook_loop.py); the CLI
in this process against that server served over HTTP (inproc_http); the migration on real
SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from db_backends import BACKENDS, database, migrate_to
from gpupool.server.db.tables import Team
from gpupool.server.notebook_watch import Probe
from inproc_http import served
from inprocess_api import InProcessServer
from test_notebook_loop import create, job, watch_of

HOUR = 3600.0
DAY = 86400.0


def make_team(server: InProcessServer, name: str, **fields: Any) -> dict[str, Any]:
    made = server.admin.post("/teams", json={"name": name, "quota_gpus": 1,
                                             "borrow_limit_gpus": 1, **fields})
    assert made.status_code == 201, made.text
    return dict(made.json())


def messages(server: InProcessServer, job_id: str) -> list[str]:
    return [e["message"] for e in job(server, job_id)["events"]]


# ---- applied: the idle timeout, the longest idle timeout, the lifetime ---------------------


def test_a_teams_default_idle_timeout_suspends_its_notebook_another_team_uses_the_servers(
        tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=1, cards=2)  # the server's default: 30 min
    make_team(server, "quick", notebook_idle_timeout_s=60)
    quick = create(server, server.user("qa", "quick"), gpus=0.5)
    slow = create(server, server.user("sam", "default"), gpus=0.5)
    server.step()
    watch = watch_of(server)
    start = server.clock()
    watch.answers = {int(quick["id"]): Probe(start, busy=False),
                     int(slow["id"]): Probe(start, busy=False)}
    server.clock.now += 59
    watch.check()
    server.step()
    assert job(server, quick["id"])["phase"] == "running"
    server.clock.now += 2
    watch.check()
    server.step()  # SIGTERM
    server.step()  # ended: suspended
    assert job(server, quick["id"])["phase"] == "suspended"
    assert any("idle for 61 s (its idle timeout is 60 s)" in m
               for m in messages(server, quick["id"]))
    assert job(server, slow["id"])["phase"] == "running"
    server.clock.now += 1800 - 61 - 1
    watch.check()
    server.step()
    assert job(server, slow["id"])["phase"] == "running"
    server.clock.now += 1
    watch.check()
    server.step()
    server.step()
    assert job(server, slow["id"])["phase"] == "suspended"
    assert any("its idle timeout is 1800 s" in m for m in messages(server, slow["id"]))


def test_a_teams_maximum_caps_the_default_its_notebooks_get(tmp_path: Path) -> None:
    """A team with a maximum below the server's default idle timeout and no default of its
    own: its notebooks without an idle timeout get its maximum."""
    server = InProcessServer(tmp_path, nodes=1, cards=1)
    make_team(server, "tight", notebook_max_idle_timeout_s=120)
    nb = create(server, server.user("tia", "tight"), gpus=0.5)
    server.step()
    watch = watch_of(server)
    watch.answers = {int(nb["id"]): Probe(server.clock(), busy=False)}
    server.clock.now += 121
    watch.check()
    server.step()
    server.step()
    assert job(server, nb["id"])["phase"] == "suspended"
    assert any("its idle timeout is 120 s" in m for m in messages(server, nb["id"]))


def test_a_teams_maximum_refuses_a_longer_idle_timeout_the_servers_would_allow(
        tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=1, cards=2)  # the server's maximum: 1 d
    make_team(server, "tight", notebook_max_idle_timeout_s=HOUR)
    tia = server.user("tia", "tight")
    refused = tia.post("/jobs", json={"kind": "notebook", "idle_timeout_s": 2 * HOUR})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "idle_timeout_s" in detail and "3600" in detail and "'tight'" in detail, detail
    assert server.admin.get("/jobs").json() == []  # nothing written
    assert create(server, tia, idle_timeout_s=HOUR)["phase"] == "pending"  # at the maximum
    sam = server.user("sam", "default")
    assert create(server, sam, idle_timeout_s=2 * HOUR)["phase"] == "pending"


def test_a_teams_maximum_may_allow_more_than_the_servers(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=1, cards=2)
    make_team(server, "long", notebook_max_idle_timeout_s=2 * DAY)
    assert create(server, server.user("lu", "long"), idle_timeout_s=1.5 * DAY)
    refused = server.user("sam", "default").post(
        "/jobs", json={"kind": "notebook", "idle_timeout_s": 1.5 * DAY})
    assert refused.status_code == 422
    assert "on this server" in refused.json()["detail"]


def test_a_teams_lifetime_suspends_its_notebook_again_after_a_resume(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=1, cards=2)  # the server's lifetime: 7 d
    make_team(server, "brief", notebook_max_lifetime_s=100)
    bea = server.user("bea", "brief")
    short = create(server, bea, gpus=1)
    other = create(server, server.user("sam", "default"), gpus=1)
    server.step()
    server.step(99)
    assert job(server, short["id"])["phase"] == "running"
    server.step(2)  # past 100 s: SIGTERM
    server.step()
    view = job(server, short["id"])
    assert view["phase"] == "suspended"
    assert any("ran for 100 s, its longest run" in m for m in messages(server, short["id"]))
    assert job(server, other["id"])["phase"] == "running"
    assert bea.post(f"/jobs/{short['id']}/resume").status_code == 202
    server.step()  # pending again (loaded with its team's lifetime)
    server.step()
    assert job(server, short["id"])["phase"] == "running"
    server.step(101)
    server.step()
    assert job(server, short["id"])["phase"] == "suspended"
    assert job(server, other["id"])["phase"] == "running"


# ---- the API: stored, shown, checked, cleared ------------------------------------------------


def test_the_settings_are_stored_listed_kept_and_reset_to_the_servers(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path)
    made = make_team(server, "t", notebook_idle_timeout_s=600,
                     notebook_max_idle_timeout_s=HOUR, notebook_max_lifetime_s=DAY)
    assert (made["notebook_idle_timeout_s"], made["notebook_max_idle_timeout_s"],
            made["notebook_max_lifetime_s"]) == (600, HOUR, DAY)
    kept = server.admin.patch("/teams/t", json={"weight": 2})
    assert kept.json()["notebook_max_lifetime_s"] == DAY  # not given: kept
    cleared = server.admin.patch("/teams/t", json={"notebook_idle_timeout_s": None,
                                                   "notebook_max_lifetime_s": None})
    assert cleared.status_code == 200, cleared.text
    listed = {t["name"]: t for t in server.admin.get("/teams").json()}["t"]
    assert (listed["notebook_idle_timeout_s"], listed["notebook_max_idle_timeout_s"],
            listed["notebook_max_lifetime_s"]) == (None, HOUR, None)
    audit = [e["detail"] for e in server.admin.get("/audit").json()]
    assert any("notebook idle timeout 600 s" in d and "notebook max lifetime 86400 s" in d
               for d in audit), audit
    assert any("the server's notebook idle timeout" in d for d in audit), audit


@pytest.mark.parametrize(("fields", "named"), [
    ({"notebook_idle_timeout_s": 4}, "notebook_idle_timeout_s"),
    ({"notebook_max_idle_timeout_s": 366 * DAY}, "notebook_max_idle_timeout_s"),
    ({"notebook_max_lifetime_s": 0}, "notebook_max_lifetime_s"),
    ({"notebook_max_lifetime_s": "soon"}, "notebook_max_lifetime_s"),
    ({"notebook_idle_timeout_s": 2 * HOUR, "notebook_max_idle_timeout_s": HOUR},
     "notebook_idle_timeout_s"),
    ({"notebook_idle_timeout_s": 2 * DAY}, "notebook_idle_timeout_s"),  # the server's max: 1 d
])
def test_a_bad_setting_is_a_422_naming_the_field(tmp_path: Path, fields: dict[str, Any],
                                                 named: str) -> None:
    server = InProcessServer(tmp_path)
    refused = server.admin.post("/teams", json={"name": "t", **fields})
    assert refused.status_code == 422, refused.text
    assert named in refused.json()["detail"]
    assert "t" not in {t["name"] for t in server.admin.get("/teams").json()}


def test_an_update_may_not_leave_the_default_above_the_maximum(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path)
    make_team(server, "t", notebook_idle_timeout_s=2 * HOUR, notebook_max_idle_timeout_s=2 * DAY)
    lower = server.admin.patch("/teams/t", json={"notebook_max_idle_timeout_s": HOUR})
    assert lower.status_code == 422, lower.text
    assert "notebook_idle_timeout_s" in lower.json()["detail"]
    cleared = server.admin.patch("/teams/t", json={"notebook_max_idle_timeout_s": None})
    assert cleared.status_code == 200  # 2 h is under the server's 1 d
    make_team(server, "u", notebook_idle_timeout_s=1.5 * DAY, notebook_max_idle_timeout_s=2 * DAY)
    back = server.admin.patch("/teams/u", json={"notebook_max_idle_timeout_s": None})
    assert back.status_code == 422 and "--notebook-max-idle-timeout" in back.json()["detail"]
    team = {t["name"]: t for t in server.admin.get("/teams").json()}["u"]
    assert team["notebook_max_idle_timeout_s"] == 2 * DAY  # nothing changed
    assert not any(e["target"] == "u" and e["action"] == "team.update"
                   for e in server.admin.get("/audit").json())


def test_the_sdk_sets_keeps_and_clears_them(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path)
    with server.sdk() as client:
        made = client.create_team("t", notebook_idle_timeout_s=900,
                                  notebook_max_lifetime_s=2 * DAY)
        assert (made.notebook_idle_timeout_s, made.notebook_max_idle_timeout_s,
                made.notebook_max_lifetime_s) == (900, None, 2 * DAY)
        changed = client.update_team("t", notebook_max_idle_timeout_s=HOUR,
                                     notebook_max_lifetime_s=None)
        assert (changed.notebook_idle_timeout_s, changed.notebook_max_idle_timeout_s,
                changed.notebook_max_lifetime_s) == (900, HOUR, None)


# ---- the CLI ---------------------------------------------------------------------------------


def test_the_cli_sets_shows_and_resets_them(tmp_path: Path) -> None:
    with served(InProcessServer(tmp_path)) as s:
        done = s.cli("admin", "team", "create", "nb", "--notebook-idle-timeout", "20m",
                     "--notebook-max-idle-timeout", "2h", "--notebook-max-lifetime", "3d")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith(
            "weight 1, notebook idle timeout 20m, notebook max idle timeout 2h, "
            "notebook max lifetime 3d")
        listing = s.cli("admin", "team", "list")
        assert listing.returncode == 0, listing.stderr
        header = listing.stdout.splitlines()[0].split()
        assert header[-9:] == ["RUN", "LIMIT", "NB", "IDLE", "NB", "MAX", "IDLE", "NB",
                               "LIFETIME"]
        row = next(line.split() for line in listing.stdout.splitlines()
                   if line.startswith("nb "))
        assert row[-4:] == ["-", "20m", "2h", "3d"]
        as_json = {t["name"]: t for t in json.loads(s.cli("admin", "team", "list",
                                                          "--json").stdout)}
        assert (as_json["nb"]["notebook_idle_timeout_s"],
                as_json["nb"]["notebook_max_idle_timeout_s"],
                as_json["nb"]["notebook_max_lifetime_s"]) == (1200, 7200, 3 * DAY)
        assert as_json["default"]["notebook_idle_timeout_s"] is None
        reset = s.cli("admin", "team", "set", "nb", "--notebook-idle-timeout", "default",
                      "--notebook-max-lifetime", "Default", "--json")
        assert reset.returncode == 0, reset.stderr
        shown = json.loads(reset.stdout)
        assert (shown["notebook_idle_timeout_s"], shown["notebook_max_idle_timeout_s"],
                shown["notebook_max_lifetime_s"]) == (None, 7200, None)
        for args, says in [
            (("--notebook-idle-timeout", "soon"), "--notebook-idle-timeout: 'soon' is not"),
            (("--notebook-max-lifetime", "0"),
             "--notebook-max-lifetime: input should be greater than 0"),
            (("--notebook-max-idle-timeout", "4s"),
             "--notebook-max-idle-timeout: input should be greater than or equal to 5"),
            (("--notebook-idle-timeout", "3h"), "notebook_idle_timeout_s: 10800 s is more"),
        ]:
            bad = s.cli("admin", "team", "set", "nb", *args)
            assert bad.returncode == 2 and says in " ".join(bad.stderr.split()), bad.stderr
        team = {t["name"]: t for t in json.loads(s.cli("admin", "team", "list",
                                                       "--json").stdout)}["nb"]
        assert team["notebook_idle_timeout_s"] is None  # the refused changes wrote nothing


# ---- revision 0011 ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_0011_gives_existing_teams_the_servers_notebook_settings_and_round_trips(
        backend: str, tmp_path: Path) -> None:
    columns = {"notebook_idle_timeout_s", "notebook_max_idle_timeout_s",
               "notebook_max_lifetime_s"}
    for db in database(backend, tmp_path, migrate=False):
        migrate_to(db, "0010")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO teams (name, quota_milli, borrow_limit_milli, "
                              "created_at) VALUES ('old', 2000, 0, 1.0)"))
        migrate_to(db, "head")
        with db.session() as s:
            old = s.scalar(select(Team).where(Team.name == "old"))
            assert old is not None
            assert (old.notebook_idle_timeout_s, old.notebook_max_idle_timeout_s,
                    old.notebook_max_lifetime_s) == (None, None, None)
            old.notebook_max_lifetime_s = DAY
        with db.session() as s:
            assert s.scalar(select(Team.notebook_max_lifetime_s)
                            .where(Team.name == "old")) == DAY
        migrate_to(db, "0010")
        with db.engine.connect() as conn:
            kept = list(conn.execute(text("SELECT * FROM teams")).keys())
        assert not columns & set(kept) and "default_run_limit_s" in kept
        migrate_to(db, "head")
