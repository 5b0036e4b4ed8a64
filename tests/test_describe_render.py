"""`gpupool describe`'s rendering of a job's time limit: none, a pending job's limit, and
a running job's stop time (local time, from its start)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from gpupool.cli import jobs_render
from gpupool.schemas.jobs import JobSpec, JobView, Phase

STARTED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def described(phase: Phase, time_limit_s: float | None) -> str:
    spec = JobSpec(command=["python", "train.py"], time_limit_s=time_limit_s)
    view = JobView(id="7", name="train", team="default", user="ada", queue="default",
                   phase=phase, priority=0, spec=spec, created_at=STARTED,
                   started_at=STARTED if phase == Phase.RUNNING else None)
    console = Console(file=io.StringIO(), width=200, highlight=False)
    console.print(jobs_render.describe(view))
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    return next(line.rstrip() for line in text.splitlines() if line.startswith("time limit"))


@pytest.mark.parametrize("seconds, shown", [(7200, "2h"), (90, "1m 30s"), (0.5, "0.5s"),
                                             (90061, "1d 1h 1m 1s")])
def test_a_pending_jobs_limit_is_shown_in_units(seconds: float, shown: str) -> None:
    assert described(Phase.PENDING, seconds).split(None, 2)[2] == f"{shown} per attempt"


def test_a_running_job_says_when_it_will_be_stopped_in_local_time() -> None:
    end = (STARTED + timedelta(hours=2)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert described(Phase.RUNNING, 7200).endswith(f"2h per attempt (stopped at {end} if "
                                                    "still running)")


def test_no_limit_says_what_that_means() -> None:
    assert "none (the job is never stopped for time" in described(Phase.RUNNING, None)
