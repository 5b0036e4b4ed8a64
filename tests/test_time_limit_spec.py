"""A job's time limit as it is carried: ``JobSpec.time_limit_s`` (seconds, > 0, at most 365
days, null: none), the YAML key ``time_limit`` (seconds or 90s/30m/2h/1d) of ``gpupool
submit``, and ``gpupool run --time-limit``. Enforcement is the controller's (not here).
In-process: no server, nothing submitted."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from gpupool.cli import jobs_cmd
from gpupool.cli.admin_render import parse_seconds
from gpupool.schemas.jobs import MAX_TIME_LIMIT_S, JobSpec, JobView

DAY = 86400


def test_the_spec_takes_seconds_within_bounds() -> None:
    assert JobSpec(command=["true"]).time_limit_s is None
    assert JobSpec(command=["true"], time_limit_s=7200).time_limit_s == 7200
    assert JobSpec(command=["true"], time_limit_s=MAX_TIME_LIMIT_S).time_limit_s == 365 * DAY
    for bad in (0, -1, 365 * DAY + 1, math.inf, math.nan, True, "2h"):
        with pytest.raises(ValidationError) as caught:
            JobSpec.model_validate({"command": ["true"], "time_limit_s": bad})
        assert caught.value.errors()[0]["loc"] == ("time_limit_s",), bad


def test_a_stored_spec_without_it_still_loads_and_views_carry_it() -> None:
    old = {"command": ["true"], "gpus": 1}  # a row written before the field existed
    assert JobSpec.model_validate(old).time_limit_s is None
    view = JobView.model_validate({
        "id": "1", "name": "j", "team": "t", "user": "u", "queue": "t", "phase": "running",
        "priority": 0, "spec": {**old, "time_limit_s": 60}, "created_at": 0})
    assert JobView.model_validate_json(view.model_dump_json()).spec.time_limit_s == 60


@pytest.mark.parametrize(("value", "seconds"), [
    (90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0),
    ("1d", 86400.0), ("2w", 14 * 86400.0), (" 1.5H ", 5400.0),
])
def test_parse_seconds(value: object, seconds: float) -> None:
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value", ["", "2 hours", "h", "1y", True, None, [1]])
def test_parse_seconds_refuses_what_is_not_a_duration(value: object) -> None:
    with pytest.raises(ValueError, match="seconds"):
        parse_seconds(value)


def _yaml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text("command: [python, train.py]\n" + body)
    return path


@pytest.mark.parametrize(("body", "seconds"), [
    ("time_limit: 2h\n", 7200.0),
    ("time_limit: 90\n", 90.0),
    ("time_limit: '30m'\n", 1800.0),
    ("time_limit: 1d\n", 86400.0),
    ("time_limit: null\n", None),
    ("time_limit_s: 60\n", 60.0),
    ("", None),
])
def test_submit_file_reads_time_limit(tmp_path: Path, body: str,
                                      seconds: float | None) -> None:
    assert jobs_cmd.load_spec(_yaml(tmp_path, body)).time_limit_s == seconds


@pytest.mark.parametrize(("body", "says"), [
    ("time_limit: 2h\ntime_limit_s: 60\n", "give time_limit or time_limit_s, not both"),
    ("time_limit: soon\n", "field 'time_limit': 'soon' is not a duration"),
    ("time_limit: 0\n", "field 'time_limit': input should be greater than 0"),
    ("time_limit: 400d\n", "field 'time_limit': input should be less than or equal to"),
    ("time_limit: true\n", "field 'time_limit': expected seconds"),
    ("time_limit_s: -5\n", "field 'time_limit_s': input should be greater than 0"),
])
def test_submit_file_names_a_bad_time_limit(tmp_path: Path, body: str, says: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = _yaml(tmp_path, body)
    with pytest.raises(typer.Exit) as stopped:
        jobs_cmd.load_spec(path)
    assert stopped.value.exit_code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert f"{path}: " in message and says in message, message


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[JobSpec]:
    """What `gpupool run` would submit (nothing is sent)."""
    specs: list[JobSpec] = []

    def capture(spec: JobSpec, *_args: Any, **_kwargs: Any) -> None:
        specs.append(spec)

    monkeypatch.setattr(jobs_cmd, "_submit", capture)
    return specs


def test_run_time_limit_option(submitted: list[JobSpec]) -> None:
    from gpupool.cli.main import app

    runner = CliRunner()
    done = runner.invoke(app, ["run", "--time-limit", "2h", "--", "python", "t.py"])
    assert done.exit_code == 0, done.output
    assert submitted[-1].time_limit_s == 7200 and submitted[-1].command == ["python", "t.py"]
    assert runner.invoke(app, ["run", "--", "true"]).exit_code == 0
    assert submitted[-1].time_limit_s is None
    for value, says in (("soon", "--time-limit: 'soon' is not a duration"),
                        ("0", "--time-limit: input should be greater than 0"),
                        ("366d", "--time-limit: input should be less than or equal")):
        bad = runner.invoke(app, ["run", "--time-limit", value, "--", "true"])
        assert bad.exit_code == 2, bad.output
        assert says in " ".join(bad.output.split()), bad.output
    assert len(submitted) == 2
