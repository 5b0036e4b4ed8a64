"""The console's Usage page in a real headless Chromium against a real `gpupool up` (four fake
A100s): jobs of the admin (team default) and of team blue (quota 2) run for known GPUs; the
page's table lists both teams with exactly the GPU-seconds of the API's /usage answer (and
GPU-hours to two decimals), the stacked chart has a segment per team summing to the same,
the allocation-vs-quota section shows blue's quota, the per-GPU grid has a cell per GPU
(shaded once a job holds one), "Group by: user" lists users, and blue's own token sees
blue only. Screenshots go to tests/artifacts/console/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from server_harness import Server, make_server, submit, wait_for
from test_console import browser, expect, needs_browser, page, shot, sign_in

__all__ = ["browser", "page"]  # fixtures shared with test_console

pytestmark = needs_browser

DONE = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # not isolated: the admin's jobs (and blue's, as unix user root) run unsandboxed;
    # make_server kills the job left running at teardown (jobs outlive the server)
    yield from make_server("sqlite", tmp_path_factory.mktemp("console-usage"), "4xA100-80GB")


def api(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


def finished(client: httpx.Client, ids: list[str]) -> bool:
    return all(client.get(f"/jobs/{i}").json()["phase"] in DONE for i in ids)


def shown_rows(page: Any) -> dict[str, dict[str, str]]:
    """The report table's rows: key → GPU-seconds (data-), GPU-hours text and jobs."""
    rows = page.get_by_test_id("usage-row")
    return {r.get_attribute("data-key"): {
        "seconds": r.get_attribute("data-gpu-seconds"), "jobs": r.get_attribute("data-jobs"),
        "hours": r.get_by_test_id("usage-hours").text_content()} for r in rows.all()}


def chart_seconds(page: Any) -> dict[str, float]:
    """The chart's segments summed per key (data-key, data-gpu-seconds)."""
    sums: dict[str, float] = {}
    for rect in page.locator("[data-testid='usage-chart'] rect[data-key]").all():
        key = rect.get_attribute("data-key")
        sums[key] = sums.get(key, 0.0) + float(rect.get_attribute("data-gpu-seconds"))
    return sums


def test_usage_page_shows_the_apis_report_chart_quotas_and_gpus(
        server: Server, page: Any) -> None:
    with api(server, server.token) as admin:
        assert admin.post("/teams", json={"name": "blue", "quota_gpus": 2}).status_code == 201
        made = admin.post("/users", json={"name": "ada", "team": "blue", "unix_user": "root"})
        assert made.status_code == 201, made.text
        blue_token = str(admin.post("/tokens", json={"user": "ada"}).json()["token"])
        with api(server, blue_token) as blue:
            ids = [submit(admin, command=["sleep", "2"], gpus=1),
                   submit(blue, command=["sleep", "2"], gpus=2)]
            wait_for(lambda: finished(admin, ids), timeout=30, interval=0.2)
        assert [admin.get(f"/jobs/{i}").json()["phase"] for i in ids] == ["succeeded"] * 2
        by_team = {r["key"]: r for r in admin.get("/usage", params={"by": "team"}).json()}
        by_user = {r["key"]: r for r in admin.get("/usage", params={"by": "user"}).json()}
    assert set(by_team) == {"default", "blue"} and set(by_user) == {"admin", "ada"}

    sign_in(page, server, server.token)
    page.get_by_role("link", name="Usage").click()
    expect(page.locator("#view h1")).to_have_text("Usage")
    expect(page.get_by_role("link", name="Usage")).to_have_attribute("aria-current", "page")

    # The report: a row per team, the API's exact GPU-seconds, GPU-hours to two decimals.
    rows = page.get_by_test_id("usage-row")
    expect(rows).to_have_count(2)
    shown = shown_rows(page)
    assert set(shown) == set(by_team), shown
    for team, row in by_team.items():
        assert float(shown[team]["seconds"]) == row["gpu_seconds"], (team, shown, row)
        assert shown[team]["hours"] == f"{row['gpu_seconds'] / 3600:.2f}"
        assert shown[team]["jobs"] == str(row["jobs"]) == "1"
    first = max(by_team, key=lambda k: by_team[k]["gpu_seconds"])
    expect(rows.first).to_have_attribute("data-key", first)  # largest first, as the API

    # The chart: a segment per team, summing to the report (same window, whole buckets).
    chart = page.get_by_test_id("usage-chart")
    expect(chart).to_be_visible()
    assert "GPU-hours" in (chart.get_attribute("aria-label") or "")
    expect(chart.locator("title").first).to_contain_text("stacked per team")
    sums = chart_seconds(page)
    assert set(sums) == set(by_team), sums
    for team, row in by_team.items():
        assert sums[team] == pytest.approx(row["gpu_seconds"], abs=0.01), (team, sums)
    expect(page.get_by_test_id("usage-legend-item")).to_have_count(2)

    # Allocation vs quota now: blue's quota of 2, nothing held.
    blue_row = page.locator("[data-testid='quota-row'][data-queue='blue']")
    expect(blue_row.get_by_test_id("quota-quota")).to_have_text("2")
    expect(blue_row.get_by_test_id("quota-used")).to_have_text("0")
    expect(blue_row.get_by_test_id("quota-borrowed")).to_have_text("0")
    expect(page.locator("[data-testid='quota-row'][data-queue='default']")).to_have_count(1)

    # Allocation per GPU now: four cells, none allocated; the note says what it is not.
    cells = page.get_by_test_id("gpu-cell")
    expect(cells).to_have_count(4)
    assert {c.get_attribute("data-share") for c in cells.all()} == {"0"}
    expect(page.get_by_test_id("gpu-grid-note")).to_contain_text("not utilisation")
    # fake GPUs: no NVML, so the heat map and the idle holders say it is not measured
    expect(page.get_by_test_id("heat-note")).to_contain_text("Not measured")
    expect(page.get_by_test_id("usage-heat")).to_be_visible()
    shot(page, "usage-01-by-team")

    # Group by user: the rows (and the chart's segments) become the users.
    page.get_by_label("Group by").select_option("user")
    expect(page.locator("[data-testid='usage-row'][data-key='ada']")).to_have_count(1)
    shown = shown_rows(page)
    assert set(shown) == set(by_user), shown
    for user, row in by_user.items():
        assert float(shown[user]["seconds"]) == row["gpu_seconds"], (user, shown, row)
    assert set(chart_seconds(page)) == set(by_user)
    assert "by=user" in page.evaluate("location.hash")

    # The last 30 days: one bar a day, the same totals.
    page.get_by_label("Window").select_option("30d")
    expect(page.get_by_test_id("usage-span")).to_contain_text("Last 30 days")
    expect(chart.locator("title").first).to_contain_text("GPU-hours per day")
    for user, row in by_user.items():
        assert chart_seconds(page)[user] == pytest.approx(row["gpu_seconds"], abs=0.01)
    assert "window=30d" in page.evaluate("location.hash")

    # A running job: its GPU's cell shows the share it holds (after a reload, not a poll).
    with api(server, server.token) as admin:
        running = submit(admin, command=["sleep", "60"], gpus=0.5)
        wait_for(lambda: admin.get(f"/jobs/{running}").json()["phase"] == "running", timeout=30)
    page.reload()
    expect(page.locator("[data-testid='gpu-cell'][data-share='0.5']")).to_have_count(1)
    expect(page.locator("[data-testid='quota-row'][data-queue='default']")
           .get_by_test_id("quota-used")).to_have_text("0.5")
    expect(page.get_by_label("Group by")).to_have_value("user")  # kept in the address

    # A phone-width window: the page does not scroll sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_test_id("usage-chart")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the Usage page is {width} px wide in a 390 px window"
    shot(page, "usage-phone")
    page.set_viewport_size({"width": 1280, "height": 860})

    # Blue's own token: blue's usage only.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API token").fill(blue_token)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{server.url}/#/usage")
    expect(page.locator("#view h1")).to_have_text("Usage")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-key", "blue")
    assert set(chart_seconds(page)) == {"blue"}
