"""The console's Services page in a real headless Chromium against a real `gpupool up` (one
fake A100): a service deployed through the API (tests/service_app.py, a stdlib HTTP server)
is listed with its gateway URL and "1 / 1" once its replica answers; its details show the
replica's node and state; an API key is shown once when created, works at the gateway, and is
gone from the list (and refused) once revoked; Edit fills the form with the deployed spec (and
deploying it unchanged changes nothing); a bad spec from the form shows the API's 422 next to
it; Delete, after a confirmation, removes the row. Screenshots go to tests/artifacts/console/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_harness import Server, job_reachable_dir, make_server, wait_for
from test_console import browser, expect, needs_browser, page, shot, sign_in

__all__ = ["browser", "page"]  # fixtures shared with test_console

pytestmark = needs_browser

APP = Path(__file__).with_name("service_app.py")
READY_MS = 60_000
"""A replica is a fresh Python process answering /healthz: seconds; generous, not a claim."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # not isolated: the admin's replicas run as root, unsandboxed; make_server kills the
    # replicas left at teardown (they outlive the server, as jobs do)
    yield from make_server("sqlite", tmp_path_factory.mktemp("console-svc"), "1xA100-80GB")


@pytest.fixture(scope="module")
def code_dir() -> Path:
    where = job_reachable_dir("gpupool-console-svc-")
    shutil.copy(APP, where / "serve.py")
    os.chmod(where / "serve.py", 0o644)
    return where


def api(server: Server) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                        headers={"Authorization": f"Bearer {server.token}"})


def status_through_gateway(url: str, token: str) -> int:
    answer = httpx.get(url + "healthz", headers={"Authorization": f"Bearer {token}"},
                       trust_env=False, timeout=30)
    return answer.status_code


def test_list_details_keys_bad_spec_and_delete_from_the_console(
        server: Server, page: Any, code_dir: Path) -> None:
    with api(server) as client:
        made = client.post("/services", json={
            "name": "echo", "command": ["python3", "serve.py"], "workdir": str(code_dir),
            "gpus": 0.25, "replicas": {"min": 1, "max": 2}, "readiness": {"path": "/healthz"},
            "grace_period_s": 1})
        assert made.status_code == 201, made.text

    sign_in(page, server, server.token)
    page.get_by_role("link", name="Services").click()
    expect(page.locator("#view h1")).to_have_text("Services")
    expect(page.get_by_role("link", name="Services")).to_have_attribute("aria-current", "page")

    # The row: ready / desired once the replica answers its readiness path, and the spec.
    row = page.locator("[data-testid='service-row'][data-name='echo']")
    expect(row.get_by_test_id("service-ready")).to_have_text("1 / 1", timeout=READY_MS)
    for text in ("default / admin", "0.25 of one GPU", "1–2", "token"):
        expect(row).to_contain_text(text)
    link = row.get_by_test_id("service-url")
    expect(link).to_have_attribute("target", "_blank")
    url = link.get_attribute("href") or ""
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/svc/echo/", url), url
    assert status_through_gateway(url, server.token) == 200

    # Details: the replica, its node and state, linked to its job's page.
    with api(server) as client:
        replica = client.get("/services/echo").json()["replicas"][0]
    row.get_by_test_id("service-details").click()
    detail = page.get_by_test_id("service-detail")
    expect(detail).to_contain_text("Service echo")
    replica_row = detail.get_by_test_id("replica-row")
    expect(replica_row).to_have_count(1)
    expect(replica_row).to_have_attribute("data-state", "ready")
    expect(replica_row.locator("[data-state='ready']")).to_have_text("ready")
    expect(replica_row.get_by_test_id("replica-node")).to_have_text(replica["node"])
    expect(replica_row.get_by_role("link")).to_have_attribute("href", f"#/jobs/{replica['id']}")
    expect(replica_row).to_contain_text("0.25 share")
    expect(detail).to_contain_text("No API keys.")

    # An API key: shown once, listed by name only, good at the gateway until revoked.
    detail.get_by_label("New API key").fill("frontend")
    detail.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("service-key-secret")
    expect(secret).to_have_text(re.compile(r"^\S{30,}$"))
    expect(page.get_by_test_id("service-key-once")).to_contain_text("will not be shown again")
    key = secret.text_content() or ""
    key_row = detail.locator("[data-testid='service-key-row'][data-key='frontend']")
    expect(key_row).to_be_visible()
    assert key not in (detail.get_by_test_id("service-keys-table").text_content() or "")
    assert status_through_gateway(url, key) == 200
    shot(page, "services-01-details-and-key")

    key_row.get_by_test_id("service-key-revoke").click()
    dialog = page.get_by_test_id("service-confirm-dialog")
    expect(dialog).to_contain_text("Revoke key frontend?")
    dialog.get_by_role("button", name="Revoke key").click()
    expect(key_row).to_have_count(0)
    expect(secret).to_have_count(0)  # the once-shown key is gone from the page
    expect(detail).to_contain_text("1 revoked key not shown")
    assert key not in page.content()
    wait_for(lambda: status_through_gateway(url, key) == 401, timeout=10, interval=0.2)

    # Edit: the form holds the deployed spec; deploying it as is changes nothing.
    form = page.get_by_test_id("service-form")
    status = page.get_by_test_id("service-form-status")
    row.get_by_test_id("service-edit").click()
    expect(form.get_by_label("Name")).to_have_value("echo")
    expect(form.get_by_label("Command")).to_have_value("python3 serve.py")
    expect(form.get_by_label("Readiness path")).to_have_value("/healthz")
    form.get_by_role("button", name="Deploy service").click()
    expect(status).to_contain_text("echo is unchanged")

    # A bad spec: the API's 422, next to the form, with the field it names marked.
    form.get_by_label("Name").fill("second")
    form.get_by_label("Min replicas").fill("3")
    form.get_by_label("Max replicas").fill("1")
    form.get_by_role("button", name="Deploy service").click()
    expect(status).to_contain_text("Not deployed:")
    expect(status).to_contain_text("min (3) is above max (1)")
    expect(form.get_by_label("Min replicas")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("service-row")).to_have_count(1)
    shot(page, "services-02-bad-spec")

    # A phone-width window: the page does not scroll sideways (rows become cards).
    page.set_viewport_size({"width": 390, "height": 844})
    expect(row.get_by_test_id("service-delete")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the Services page is {width} px wide in a 390 px window"
    shot(page, "services-phone")
    page.set_viewport_size({"width": 1280, "height": 860})

    # Delete: a confirmation first; Cancel keeps it, confirming deletes it.
    row.get_by_test_id("service-delete").click()
    expect(dialog).to_contain_text("Delete service echo?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(row).to_be_visible()
    row.get_by_test_id("service-delete").click()
    dialog.get_by_role("button", name="Delete service").click()
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("services-table")).to_contain_text("No services")
    expect(page.get_by_test_id("services-message")).to_contain_text("Deleted echo")
    expect(detail).to_be_hidden()
    with api(server) as client:
        assert client.get("/services/echo").status_code == 404
