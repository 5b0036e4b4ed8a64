"""Usage records (services/usage_records.py) and revision 0008, on real SQLite and PostgreSQL:
one record per attempt, opened and closed idempotently, closed on recovery when their job is
no longer active, and decayed GPU-seconds per team and user integrated exactly. Times are
made-up numbers (``now`` is passed in); nothing here sleeps."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from db_backends import BACKENDS, database, migrate_to
from gpupool.schemas.jobs import Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, UsageRecord, User
from gpupool.server.services.usage_records import (
    FORGET_HALF_LIVES,
    close_attempt,
    close_open,
    decayed_gpu_seconds,
    decayed_usage,
    decayed_usage_by_user,
    open_attempt,
)

DAY = 86400.0
T0 = 1_700_000_000.0


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from database(request.param, tmp_path)


def _team(db: Database, name: str, deleted: bool = False) -> tuple[int, int]:
    """(team id, id of its user ``<name>-u``)."""
    with db.session() as s:
        team = Team(name=name, quota_milli=0, borrow_limit_milli=0, created_at=T0,
                    deleted_at=T0 if deleted else None)
        s.add(team)
        s.flush()
        user = User(name=f"{name}-u", team_id=team.id, created_at=T0)
        s.add(user)
        s.flush()
        return team.id, user.id


def _user(db: Database, team_id: int, name: str) -> int:
    with db.session() as s:
        user = User(name=name, team_id=team_id, created_at=T0)
        s.add(user)
        s.flush()
        return user.id


def _job(db: Database, team_id: int, user_id: int, phase: Phase = Phase.RUNNING,
         attempts: int = 1, ended_at: float | None = None) -> int:
    with db.session() as s:
        job = Job(name="j", team_id=team_id, user_id=user_id, queue="q", phase=phase.value,
                  spec={"command": ["true"]}, attempts=attempts, failures=0, created_at=T0,
                  ended_at=ended_at)
        s.add(job)
        s.flush()
        return job.id


def _record(db: Database, job_id: int, attempt: int) -> UsageRecord:
    with db.session() as s:
        found = s.scalar(select(UsageRecord).where(UsageRecord.job_id == job_id,
                                                   UsageRecord.attempt == attempt))
        assert found is not None
        return found


def _numeric(start: float, end: float, gpus: float, now: float, half_life: float) -> float:
    """The same integral by the midpoint rule (a check independent of the closed form)."""
    steps = 20000
    width = (end - start) / steps
    return sum(gpus * 0.5 ** ((now - (start + (i + 0.5) * width)) / half_life) * width
               for i in range(steps))


# ---- the revision -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_0008_gives_existing_teams_weight_1_and_round_trips(backend: str,
                                                            tmp_path: Path) -> None:
    for db in database(backend, tmp_path, migrate=False):
        migrate_to(db, "0007")
        with db.engine.begin() as conn:  # a team that users and jobs point at
            conn.execute(text("INSERT INTO teams (name, quota_milli, borrow_limit_milli, "
                              "created_at) VALUES ('old', 2000, 0, 1.0)"))
            conn.execute(text("INSERT INTO users (name, team_id, admin, created_at, "
                              "unix_created, disabled) SELECT 'old-u', id, false, 1.0, "
                              "false, false FROM teams WHERE name = 'old'"))
        migrate_to(db, "0008")
        with db.engine.connect() as conn:  # columns of 0008 only (the model has newer ones)
            old = conn.execute(text("SELECT weight, cohort, lend_limit_milli FROM teams "
                                    "WHERE name = 'old'")).one()
            assert tuple(old) == (1.0, None, None)
        migrate_to(db, "head")
        team_id, user_id = _team(db, "new")
        job_id = _job(db, team_id, user_id)
        with db.session() as s:
            open_attempt(s, job_id, 1, team_id, user_id, 1000, 0, 0, T0)
        migrate_to(db, "0007")  # the downgrade drops the table and the columns
        with db.engine.connect() as conn:
            columns = list(conn.execute(text("SELECT * FROM teams")).keys())
            tables = inspect(conn).get_table_names()
        assert not {"weight", "cohort", "lend_limit_milli"} & set(columns)
        assert "usage_records" not in tables
        migrate_to(db, "head")


@pytest.mark.parametrize("backend", BACKENDS)
def test_0009_gives_existing_teams_the_servers_run_limit_and_round_trips(
        backend: str, tmp_path: Path) -> None:
    for db in database(backend, tmp_path, migrate=False):
        migrate_to(db, "0008")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO teams (name, quota_milli, borrow_limit_milli, "
                              "created_at) VALUES ('old', 2000, 0, 1.0)"))
        migrate_to(db, "head")
        with db.session() as s:
            old = s.scalar(select(Team).where(Team.name == "old"))
            assert old is not None and old.default_run_limit_s is None
            old.default_run_limit_s = 1800.0
        with db.session() as s:
            assert s.scalar(select(Team.default_run_limit_s)
                            .where(Team.name == "old")) == 1800.0
        migrate_to(db, "0008")
        with db.engine.connect() as conn:
            columns = list(conn.execute(text("SELECT * FROM teams")).keys())
        assert "default_run_limit_s" not in columns and "weight" in columns
        migrate_to(db, "head")


# ---- writing records ----------------------------------------------------------------------


def test_open_attempt_is_idempotent_and_one_record_per_attempt(db: Database) -> None:
    team_id, user_id = _team(db, "a")
    job_id = _job(db, team_id, user_id)
    with db.session() as s:
        first = open_attempt(s, job_id, 1, team_id, user_id, 2000, 4000, 1024, T0)
        again = open_attempt(s, job_id, 1, team_id, user_id, 999, 1, 1, T0 + 50)
        assert again.id == first.id
    record = _record(db, job_id, 1)
    assert (record.started_at, record.ended_at, record.gpu_milli, record.cpu_milli,
            record.memory_mib) == (T0, None, 2000, 4000, 1024)
    with db.session() as s:  # a later call in another transaction changes nothing either
        assert open_attempt(s, job_id, 1, team_id, user_id, 5, 5, 5, T0 + 99).gpu_milli == 2000
        open_attempt(s, job_id, 2, team_id, user_id, 1000, 0, 0, T0 + 100)
    with pytest.raises(IntegrityError), db.session() as s:  # the constraint holds by itself
        s.add(UsageRecord(job_id=job_id, attempt=1, team_id=team_id, user_id=user_id,
                          started_at=T0, gpu_milli=1, cpu_milli=0, memory_mib=0))
    with db.session() as s:
        count = len(s.scalars(select(UsageRecord).where(UsageRecord.job_id == job_id)).all())
    assert count == 2


def test_open_attempt_refuses_negative_amounts(db: Database) -> None:
    team_id, user_id = _team(db, "a")
    job_id = _job(db, team_id, user_id)
    with pytest.raises(ValueError, match=r"job \d+ attempt 1: amounts cannot be negative"), \
            db.session() as s:
        open_attempt(s, job_id, 1, team_id, user_id, -1, 0, 0, T0)


def test_close_attempt_ends_once_and_ignores_what_is_not_there(db: Database) -> None:
    team_id, user_id = _team(db, "a")
    job_id = _job(db, team_id, user_id)
    with db.session() as s:
        assert close_attempt(s, job_id, 1, T0) is False  # no record: nothing to do
        open_attempt(s, job_id, 1, team_id, user_id, 1000, 0, 0, T0)
    with db.session() as s:
        assert close_attempt(s, job_id, 1, T0 + 60) is True
        assert close_attempt(s, job_id, 1, T0 + 999) is False  # the first end stays
    assert _record(db, job_id, 1).ended_at == T0 + 60
    with db.session() as s:  # an end before the start (a clock step back) is the start
        open_attempt(s, job_id, 2, team_id, user_id, 1000, 0, 0, T0 + 100)
        assert close_attempt(s, job_id, 2, T0 + 90)
    assert _record(db, job_id, 2).ended_at == T0 + 100


def test_close_open_ends_only_what_no_active_attempt_backs(db: Database) -> None:
    team_id, user_id = _team(db, "a")
    running = _job(db, team_id, user_id, Phase.RUNNING, attempts=1)
    starting = _job(db, team_id, user_id, Phase.STARTING, attempts=2)  # attempt 1 is stale
    ended = _job(db, team_id, user_id, Phase.SUCCEEDED, attempts=1, ended_at=T0 + 30)
    requeued = _job(db, team_id, user_id, Phase.PENDING, attempts=1)
    with db.session() as s:
        for job_id, attempt in ((running, 1), (starting, 1), (starting, 2), (ended, 1),
                                (requeued, 1)):
            open_attempt(s, job_id, attempt, team_id, user_id, 1000, 0, 0, T0)
    with db.session() as s:
        assert close_open(s, T0 + 100) == 3
    assert _record(db, running, 1).ended_at is None
    assert _record(db, starting, 2).ended_at is None
    assert _record(db, starting, 1).ended_at == T0 + 100
    assert _record(db, ended, 1).ended_at == T0 + 30  # when its job ended, known
    assert _record(db, requeued, 1).ended_at == T0 + 100
    with db.session() as s:
        assert close_open(s, T0 + 200) == 0  # nothing left to close


# ---- decayed usage ------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end", "gpus", "now", "half_life"), [
    (0.0, 3600.0, 1.0, 3600.0, 7 * DAY),        # an hour, just ended
    (0.0, 3600.0, 4.0, 3600.0 + 7 * DAY, 7 * DAY),  # one half-life later: half of it
    (0.0, 10 * DAY, 0.5, 10 * DAY, DAY),        # long against the half-life
    (100.0, 101.0, 8.0, 101.0 + 3 * DAY, 600.0),  # short and long ago
])
def test_decayed_gpu_seconds_is_the_exact_integral(start: float, end: float, gpus: float,
                                                    now: float, half_life: float) -> None:
    exact = decayed_gpu_seconds(start, end, gpus, now, half_life)
    closed = (gpus * half_life / math.log(2)
              * (2 ** (-(now - end) / half_life) - 2 ** (-(now - start) / half_life)))
    assert exact == pytest.approx(closed, rel=1e-9, abs=1e-300)
    assert exact == pytest.approx(_numeric(start, end, gpus, now, half_life), rel=1e-6)


def test_decayed_gpu_seconds_edges() -> None:
    # one half-life ago counts half; a very long half-life is plain GPU-seconds
    assert decayed_gpu_seconds(0, 1, 1, 1 + DAY, DAY) == pytest.approx(0.5, rel=1e-4)
    assert decayed_gpu_seconds(0, 3600, 2, 3600, 1e12) == pytest.approx(7200, rel=1e-6)
    assert decayed_gpu_seconds(0, None, 1, 60, 1e12) == pytest.approx(60, rel=1e-6)  # open
    assert decayed_gpu_seconds(0, 100, 1, 50, 1e12) == pytest.approx(50, rel=1e-6)  # future
    assert decayed_gpu_seconds(200, None, 1, 100, DAY) == 0.0  # starts after now
    assert decayed_gpu_seconds(0, 100, 0, 100, DAY) == 0.0
    end = T0 + 1e-3  # a millisecond, as exactly as floats near T0 tell it
    tiny = decayed_gpu_seconds(T0, end, 1, end, DAY)  # no cancellation of near-equal terms
    assert tiny == pytest.approx(end - T0, rel=1e-8)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="half_life_s"):
            decayed_gpu_seconds(0, 1, 1, 1, bad)


def test_decayed_usage_per_team_and_user(db: Database) -> None:
    half = DAY
    now = T0 + 10 * DAY
    a, ann = _team(db, "a")
    bob = _user(db, a, "bob")
    b, bea = _team(db, "b")
    gone, gus = _team(db, "gone", deleted=True)
    spans = [  # (team, user, start, end or None, gpu_milli)
        (a, ann, T0, T0 + DAY, 2000),
        (a, bob, now - 3600, None, 500),
        (b, bea, now - 2 * DAY, now - DAY, 8000),
        (b, bea, now - 100, now - 50, 0),  # a CPU-only attempt: no GPU-seconds
        (gone, gus, now - 3600, now, 1000),  # a deleted team is not reported
    ]
    jobs = [_job(db, team_id, user_id) for team_id, user_id, *_ in spans]
    with db.session() as s:
        for job_id, (team_id, user_id, start, end, milli) in zip(jobs, spans, strict=True):
            open_attempt(s, job_id, 1, team_id, user_id, milli, 1000, 512, start)
            if end is not None:
                close_attempt(s, job_id, 1, end)
    expect_ann = decayed_gpu_seconds(T0, T0 + DAY, 2, now, half)
    expect_bob = decayed_gpu_seconds(now - 3600, None, 0.5, now, half)
    expect_bea = decayed_gpu_seconds(now - 2 * DAY, now - DAY, 8, now, half)
    teams = decayed_usage(db, now, half)
    assert set(teams) == {"a", "b"}
    assert teams["a"] == pytest.approx(expect_ann + expect_bob, rel=1e-12)
    assert teams["b"] == pytest.approx(expect_bea, rel=1e-12)
    assert expect_bea == pytest.approx(8 * DAY / 2 / math.log(2) / 2, rel=1e-12)
    users = decayed_usage_by_user(db, now, half)
    assert users == pytest.approx({("a", "a-u"): expect_ann, ("a", "bob"): expect_bob,
                                   ("b", "b-u"): expect_bea}, rel=1e-12)
    # an open record keeps growing with now; records past the horizon are not read
    later = decayed_usage(db, now + 3600, half)
    assert later["a"] > teams["a"] * 0.5 ** (3600 / half)
    far = now + (FORGET_HALF_LIVES + 1) * half
    assert set(decayed_usage(db, far, half)) == {"a"}  # only the open record is left
    # what the scheduler reads: ended attempts only (it counts held GPUs itself)
    ended = decayed_usage(db, now, half, ended_only=True)
    assert ended["a"] == pytest.approx(expect_ann, rel=1e-12)
    assert decayed_usage_by_user(db, now, half, ended_only=True) == pytest.approx(
        {("a", "a-u"): expect_ann, ("b", "b-u"): expect_bea}, rel=1e-12)
    with pytest.raises(ValueError, match="half_life_s"):
        decayed_usage(db, now, 0)


def test_decayed_usage_of_an_empty_pool_is_empty(db: Database) -> None:
    assert decayed_usage(db, T0, DAY) == {}
    assert decayed_usage_by_user(db, T0, DAY) == {}
