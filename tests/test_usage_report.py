"""The usage report and its time series (services/usage_report.py) on real SQLite and
PostgreSQL, with made-up times: attempts are clipped to the window, an open one counts until
now, buckets add up to the report, users see only their team, bad windows are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from db_backends import BACKENDS, database
from gpupool.schemas.jobs import Phase
from gpupool.schemas.usage import UsageBy
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, User
from gpupool.server.services import gpu_usage
from gpupool.server.services.errors import Invalid
from gpupool.server.services.identity import Principal
from gpupool.server.services.usage_records import close_attempt, open_attempt
from gpupool.server.services.usage_report import usage, usage_series

T0 = 1_700_000_000.0
H = 3600.0
ADMIN = Principal(user_id=0, user="root", team_id=0, team="", admin=True)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from database(request.param, tmp_path)


def seed(db: Database) -> dict[str, tuple[int, int]]:
    """blue: one GPU from T0 to T0+2h, half a GPU from T0+1h still running; red: two GPUs
    from T0+30min to T0+1h30."""
    ids: dict[str, tuple[int, int]] = {}
    with db.session() as s:
        for name in ("blue", "red"):
            team = Team(name=name, quota_milli=0, borrow_limit_milli=0, created_at=T0)
            s.add(team)
            s.flush()
            user = User(name=f"{name}-u", team_id=team.id, created_at=T0)
            s.add(user)
            s.flush()
            ids[name] = (team.id, user.id)
        for n, (team_name, milli, start, end) in enumerate(
                [("blue", 1000, T0, T0 + 2 * H), ("blue", 500, T0 + H, None),
                 ("red", 2000, T0 + H / 2, T0 + 1.5 * H)]):
            team_id, user_id = ids[team_name]
            job = Job(name=f"j{n}", team_id=team_id, user_id=user_id, queue=team_name,
                      phase=(Phase.RUNNING if end is None else Phase.SUCCEEDED).value,
                      spec={"command": ["true"]}, attempts=1, failures=0, created_at=start)
            s.add(job)
            s.flush()
            open_attempt(s, job.id, 1, team_id, user_id, milli, 0, 0, start)
            if end is not None:
                close_attempt(s, job.id, 1, end)
    return ids


def test_the_report_clips_to_the_window_and_counts_open_attempts_until_now(
        db: Database) -> None:
    seed(db)
    now = T0 + 3 * H
    rows = {r.key: r for r in usage(db, ADMIN, UsageBy.TEAM, T0, T0 + 10 * H, now)}
    assert rows["blue"].gpu_seconds == pytest.approx(2 * H + 0.5 * 2 * H)
    assert rows["red"].gpu_seconds == pytest.approx(2 * H)
    assert rows["blue"].jobs == 2 and rows["red"].jobs == 1
    # a window of the second hour only
    second = {r.key: r.gpu_seconds for r in usage(db, ADMIN, UsageBy.TEAM, T0 + H,
                                                 T0 + 2 * H, now)}
    assert second == {"blue": pytest.approx(1.5 * H), "red": pytest.approx(H)}
    by_queue = {r.key for r in usage(db, ADMIN, UsageBy.QUEUE, T0, now, now)}
    assert by_queue == {"blue", "red"}


def test_a_user_sees_only_their_team(db: Database) -> None:
    ids = seed(db)
    team_id, user_id = ids["red"]
    red = Principal(user_id=user_id, user="red-u", team_id=team_id, team="red", admin=False)
    assert [r.key for r in usage(db, red, UsageBy.USER, T0, T0 + 3 * H, T0 + 3 * H)] == [
        "red-u"]


def test_the_buckets_add_up_to_the_report(db: Database) -> None:
    seed(db)
    now = T0 + 3 * H
    series = usage_series(db, ADMIN, UsageBy.TEAM, T0, T0 + 4 * H, H, now)
    assert series.buckets == 4 and series.start == T0
    assert series.values["red"] == [pytest.approx(H), pytest.approx(H), 0, 0]
    assert series.values["blue"] == [pytest.approx(H), pytest.approx(1.5 * H),
                                     pytest.approx(0.5 * H), 0]  # nothing after now
    report = {r.key: r.gpu_seconds for r in usage(db, ADMIN, UsageBy.TEAM, T0, T0 + 4 * H,
                                                  now)}
    for team, values in series.values.items():
        assert sum(values) == pytest.approx(report[team])


def test_bad_windows_are_refused_naming_the_field(db: Database) -> None:
    with pytest.raises(Invalid, match="until"):
        usage(db, ADMIN, UsageBy.TEAM, T0, T0 - 1, T0)
    with pytest.raises(Invalid, match="step_s"):
        usage_series(db, ADMIN, UsageBy.TEAM, T0, T0 + 2000 * H, H, T0)


def test_measured_gpu_seconds_count_pro_rata_and_unmeasured_ones_are_null(
        db: Database) -> None:
    """What NVML measured (services/gpu_usage.py) is on the records: blue's first job used
    3,600 GPU-seconds of its 7,200 held; a window of its second hour counts half of them;
    red was never measured (null). The job's own view sums its records."""
    seed(db)
    with db.read() as s:
        first = s.query(Job.id).filter(Job.name == "j0").scalar()
        open_one = s.query(Job.id).filter(Job.name == "j1").scalar()
    gpu_usage.save(db, [gpu_usage.Measured(first, 1, H, 2 * H, 0.9, 4096, None),
                        gpu_usage.Measured(open_one, 1, 0.0, 600.0, 0.01, 10, T0 + 1.5 * H)])
    now = T0 + 3 * H
    rows = {r.key: r for r in usage(db, ADMIN, UsageBy.TEAM, T0, now, now)}
    assert rows["blue"].gpu_seconds_used == pytest.approx(H)
    assert rows["red"].gpu_seconds_used is None
    second = {r.key: r for r in usage(db, ADMIN, UsageBy.TEAM, T0 + H, T0 + 2 * H, now)}
    assert second["blue"].gpu_seconds_used == pytest.approx(H / 2)
    assert gpu_usage.measured(db, [(first, 1), (first, 2)]) == {
        (first, 1): gpu_usage.Measured(first, 1, H, 2 * H, 0.9, 4096, None)}
    views = gpu_usage.usage_of(db, [first, open_one, 999], now)
    assert set(views) == {first, open_one}
    done = views[first]
    assert (done.gpu_seconds, done.gpu_seconds_used, done.mean_utilization,
            done.peak_memory_mib, done.idle_since) == (2 * H, H, 0.5, 4096, None)
    running = views[open_one]  # open: held until now, flagged idle since T0 + 1.5 h
    assert running.gpu_seconds == pytest.approx(0.5 * 2 * H)
    assert running.idle_since is not None and running.idle_since.timestamp() == T0 + 1.5 * H
