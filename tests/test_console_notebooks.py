"""The console's Notebooks page in a real headless Chromium against a real `gpupool up` (two
fake A100s) running real JupyterLab: create a notebook from the form (and see the API's
errors next to it), open it through the one-time sign-in address in a new tab on the
gateway's own origin, run ``1+1`` in JupyterLab, check that the console's token reached
neither a cookie nor the storage of the gateway's origin, then suspend, resume and delete it
from the page. Screenshots go to tests/artifacts/console/ (not committed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from notebook_client import wait_for as wait_notebook
from server_harness import Server, make_server
from test_console import browser, expect, goto, needs_browser, page, shot, sign_in

__all__ = ["browser", "page"]  # fixtures shared with test_console

pytest.importorskip("jupyterlab", reason="the notebook extra is not installed")
pytestmark = needs_browser

SLOW_MS = 90_000
"""JupyterLab takes seconds to start, stop and start again: generous, never a timing claim."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("console-nb"), "2xA100-80GB")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def api(server: Server) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                        headers={"Authorization": f"Bearer {server.token}"})


def create_from_form(page: Any, name: str, gpus: str) -> None:
    form = page.get_by_test_id("notebook-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("GPUs").fill(gpus)
    form.get_by_role("button", name="Create notebook").click()


def run_one_plus_one(lab: Any) -> None:
    """In JupyterLab 4: a new notebook from the launcher, ``1+1`` in its first cell, Shift+Enter,
    and ``2`` in the output."""
    tile = lab.locator(".jp-LauncherCard[data-category='Notebook']").first
    expect(tile).to_be_visible(timeout=SLOW_MS)
    tile.click()
    editor = lab.locator(".jp-NotebookPanel .jp-Cell .cm-content").first
    expect(editor).to_be_visible(timeout=SLOW_MS)
    # A kernel chooser may come up first (it should not with one kernel): take its default.
    chooser = lab.locator(".jp-Dialog .jp-mod-accept")
    if chooser.count():
        chooser.first.click()
    # Code run before the kernel is up is not queued: wait for the status bar's "Idle".
    expect(lab.get_by_role("button", name=re.compile(r"Python 3 \(ipykernel\) \| Idle"))
           ).to_be_visible(timeout=SLOW_MS)
    editor.click()
    editor.press_sequentially("1+1")
    expect(editor).to_have_text("1+1")
    editor.press("Shift+Enter")
    output = lab.locator(".jp-NotebookPanel .jp-OutputArea-output").first
    expect(output).to_have_text(re.compile(r"^\s*2\s*$"), timeout=SLOW_MS)


def test_create_open_run_suspend_resume_and_delete_from_the_console(
        server: Server, page: Any) -> None:
    token = server.token
    sign_in(page, server, token)
    page.get_by_role("link", name="Notebooks").click()
    expect(page.locator("#view h1")).to_have_text("Notebooks")
    expect(page.get_by_role("link", name="Notebooks")).to_have_attribute("aria-current", "page")
    expect(page.get_by_test_id("notebooks-table")).to_contain_text("No live notebooks")

    # Bad input: the API's own message, next to the form, and the field marked invalid.
    create_from_form(page, "class1", "1.5")
    status = page.get_by_test_id("notebook-form-status")
    expect(status).to_contain_text("gpus:")
    expect(page.get_by_test_id("notebook-form").get_by_label("GPUs")).to_have_attribute(
        "aria-invalid", "true")

    create_from_form(page, "class1", "0.5")
    expect(status).to_contain_text("Created class1")
    row = page.locator("[data-testid='notebook-row'][data-name='class1']")
    expect(row).to_be_visible()
    nb = row.get_attribute("data-notebook")
    assert nb and nb.isdigit(), nb
    expect(row).to_contain_text("0.5 of one GPU")

    # The name is taken while it lives: 409, said next to the form.
    create_from_form(page, "class1", "0.25")
    expect(status).to_contain_text("Not created:")
    expect(status).to_contain_text("class1")
    expect(page.locator("[data-testid='notebook-row']")).to_have_count(1)

    open_button = row.get_by_test_id("notebook-open")
    expect(open_button).to_be_enabled(timeout=SLOW_MS)
    with api(server) as client:
        view = client.get(f"/jobs/{nb}").json()
    assert view["kind"] == "notebook" and view["url"], view
    gateway = origin(view["url"])
    assert gateway != origin(server.url)
    shot(page, "notebooks-01-ready")

    # Open: a new tab on the gateway's origin, signed in by the one-time address.
    with page.context.expect_page(timeout=SLOW_MS) as opened:
        open_button.click()
    lab = opened.value
    lab.set_default_timeout(SLOW_MS)
    lab.wait_for_url(re.compile(rf"^{re.escape(gateway)}/nb/{nb}/lab"), timeout=SLOW_MS)
    assert origin(lab.url) == gateway != origin(page.url)
    assert lab.evaluate("window.opener") is None
    run_one_plus_one(lab)
    shot(lab, "notebooks-02-jupyterlab")

    # The console's token went nowhere near the gateway's origin: not in a cookie (the one
    # gpupool cookie there is the notebook's own, HttpOnly), not in its storage.
    cookies = page.context.cookies([gateway + f"/nb/{nb}/lab"])
    ours = [c for c in cookies if c["name"].startswith("gpupool")]
    assert [c["name"] for c in ours] == [f"gpupool_nb_{nb}"], cookies
    assert ours[0]["httpOnly"], ours
    assert not any(token in c["value"] for c in page.context.cookies()), "token in a cookie"
    stored = lab.evaluate("JSON.stringify([Object.entries(sessionStorage), "
                          "Object.entries(localStorage)])")
    assert token not in stored
    assert token not in lab.url
    # ... and the console's own tab still holds it (the new tab's copy was cleared, not ours).
    assert page.evaluate("sessionStorage.getItem('gpupool.token')") == token

    # Suspend from the console: the row says so, and how resume works.
    page.bring_to_front()
    row.get_by_test_id("notebook-suspend").click()
    expect(row).to_have_attribute("data-phase", "suspended", timeout=SLOW_MS)
    expect(row.get_by_test_id("notebook-note")).to_contain_text("Kernels restart")
    expect(row.get_by_test_id("notebook-open")).to_be_disabled()
    expect(row.get_by_test_id("notebook-resume")).to_be_visible()
    shot(page, "notebooks-03-suspended")

    # The jobs list knows the phase too.
    goto(page, server, "/jobs?phase=suspended")
    expect(page.locator(f"[data-testid='jobs-table'] tr[data-job='{nb}'] [data-phase='suspended']")
           ).to_be_visible()
    page.get_by_role("link", name="Notebooks").click()

    # Resume: running again, and Open works once JupyterLab answers.
    row.get_by_test_id("notebook-resume").click()
    expect(page.get_by_test_id("notebooks-message")).to_contain_text("queued to start again")
    expect(row).to_have_attribute("data-phase", "running", timeout=SLOW_MS)
    expect(row.get_by_test_id("notebook-open")).to_be_enabled(timeout=SLOW_MS)
    with api(server) as client:
        assert wait_notebook(client, nb, "ready")["attempts"] == 2

    # A phone-width window: the page does not scroll sideways (rows become cards).
    page.set_viewport_size({"width": 390, "height": 844})
    expect(row.get_by_test_id("notebook-open")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the Notebooks page is {width} px wide in a 390 px window"
    shot(page, "notebooks-phone")
    page.set_viewport_size({"width": 1280, "height": 860})

    # Delete: a confirmation first; "Keep it" keeps it, confirming cancels it.
    row.get_by_test_id("notebook-delete").click()
    dialog = page.get_by_test_id("notebook-delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Delete notebook class1?")
    shot(page, "notebooks-04-delete")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    expect(row).to_be_visible()
    row.get_by_test_id("notebook-delete").click()
    dialog.get_by_role("button", name="Delete notebook").click()
    expect(row).to_have_count(0, timeout=SLOW_MS)
    with api(server) as client:
        ended = wait_notebook(client, nb, "cancelled", timeout=SLOW_MS / 1000)
    assert ended["phase"] == "cancelled"
