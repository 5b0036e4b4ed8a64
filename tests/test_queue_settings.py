"""The server's queue-policy settings (``Settings.queue_order``, ``backfill``,
``fairshare_half_life_s``, ``reserve_after_s``, ``default_run_limit_s``) and the `gpupool up`
options that set them: defaults, refusals that name the setting or option, and the names the
CLI's help offers. In-process: `up` is refused before it creates or starts anything."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpupool.cli import choices
from gpupool.server import settings as server_settings
from gpupool.server.settings import Settings


def test_defaults() -> None:
    s = Settings(home=Path("/nowhere"))
    assert (s.queue_order, s.backfill, s.fairshare_half_life_s, s.reserve_after_s,
            s.default_run_limit_s) == ("fairshare", True, 7 * 86400, 300.0, 3600.0)
    assert Settings(home=Path("/nowhere"), queue_order="fifo", backfill=False,
                    reserve_after_s=0).queue_order == "fifo"


@pytest.mark.parametrize(("field", "value", "says"), [
    ("queue_order", "lifo", "queue_order 'lifo': use one of fifo, fairshare"),
    ("queue_order", "FIFO", "queue_order 'FIFO'"),
    ("backfill", "yes", "backfill 'yes': use true or false"),
    ("fairshare_half_life_s", 0, "fairshare_half_life_s 0: use a finite number of seconds, "
                                 "more than 0"),
    ("fairshare_half_life_s", math.inf, "fairshare_half_life_s inf"),
    ("reserve_after_s", -1.0, "reserve_after_s -1.0: use a finite number of seconds, 0 or more"),
    ("reserve_after_s", math.nan, "reserve_after_s nan"),
    ("default_run_limit_s", 0.0, "default_run_limit_s 0.0"),
    ("default_run_limit_s", True, "default_run_limit_s True"),
])
def test_bad_values_are_refused_naming_the_setting(field: str, value: Any, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        Settings(home=Path("/nowhere"), **{field: value})
    assert says in str(caught.value)


def test_the_cli_offers_the_real_queue_orders() -> None:
    assert choices.QUEUE_ORDERS == server_settings.QUEUE_ORDERS


@pytest.mark.parametrize(("args", "says"), [
    (["--queue-order", "lifo"], "--queue-order 'lifo': use one of fifo, fairshare"),
    (["--fairshare-half-life", "soon"], "--fairshare-half-life: 'soon' is not a duration"),
    (["--fairshare-half-life", "0"], "--fairshare-half-life '0': give a duration more than 0"),
    (["--fairshare-half-life", "-3d"], "--fairshare-half-life"),
    (["--default-run-limit", "0"], "--default-run-limit '0': give a duration more than 0"),
    (["--default-run-limit", "later"], "--default-run-limit: 'later' is not a duration"),
])
def test_up_refuses_bad_queue_options_before_starting(args: list[str], says: str,
                                                      tmp_path: Path) -> None:
    from gpupool.cli.main import app

    home = tmp_path / "home"
    done = CliRunner().invoke(app, ["up", "--home", str(home), *args])
    assert done.exit_code == 2, done.output
    assert says in " ".join(done.output.split()), done.output
    assert not home.exists()  # refused before the data dir was made


def test_up_help_shows_the_queue_options() -> None:
    from gpupool.cli.main import app

    shown = " ".join(CliRunner().invoke(app, ["up", "--help"], terminal_width=200)
                     .output.split())
    for text in ("--queue-order", "--backfill / --no-backfill", "--fairshare-half-life",
                 "--default-run-limit", "fairshare", "fifo"):
        assert text in shown, text
