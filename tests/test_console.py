"""The web console in a real headless Chromium (Debian's chromium, driven by Playwright)
against a real `gpupool up` with one fake A100: sign in, submit a job from the form and watch
it run and log, see why a job waits, cancel another, and check that a second team's token
sees none of the first team's jobs. Screenshots of every page go to tests/artifacts/console/.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_harness import Server, make_server, wait_for

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts" / "console"
# The machine has no network: without the background-networking flags Chromium keeps
# trying to reach Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found: install Debian's chromium package (scripts/test.sh does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    return None


needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")

# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("console"), "1xA100-80GB")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors other than the browser's note on an HTTP error status (a refused token
    # or a job the token may not see are expected) mean a bug, e.g. a CSP violation.
    pg.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and not msg.text.startswith("Failed to load resource")
            and errors.append(msg.text)
        ),
    )
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


# ---- helpers ----------------------------------------------------------------------------


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=WAIT_MS)
    return pw_expect(locator)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: Server, token: str, screenshot: str | None = None) -> None:
    page.goto(server.url + "/")
    expect(page.get_by_label("API token")).to_be_visible()
    if screenshot:
        shot(page, screenshot)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_be_visible()


def goto(page: Any, server: Server, route: str) -> None:
    page.goto(f"{server.url}/#{route}")


def gated_script(gate: Path, hello: str) -> str:
    return (
        "import pathlib, time\n"
        f"print({hello!r}, flush=True)\n"
        f"while not pathlib.Path({str(gate)!r}).exists():\n"
        "    time.sleep(0.05)\n"
        "print('gate opened', flush=True)\n"
    )


def submit_api(server: Server, gpus: float, name: str, gate: Path, token: str = "") -> str:
    with server.client(token or None) as c:
        r = c.post(
            "/jobs",
            json={
                "command": [sys.executable, "-c", gated_script(gate, f"hello from {name}")],
                "gpus": gpus,
                "name": name,
                "grace_period_s": 5,
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def job_api(server: Server, job_id: str) -> dict[str, Any]:
    with server.client() as c:
        return dict(c.get(f"/jobs/{job_id}").json())


def phase(page: Any) -> Any:
    return page.get_by_test_id("job-phase")


# ---- tests ------------------------------------------------------------------------------


def test_console_is_served_next_to_the_api(server: Server) -> None:
    """The console's files come from the package, offline; the API and /docs still answer."""
    index = httpx.get(server.url + "/")
    assert index.status_code == 200
    assert '<script type="module" src="app.js">' in index.text
    assert "http://" not in index.text and "https://" not in index.text  # no CDN
    script = httpx.get(server.url + "/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert httpx.get(server.url + "/views/cluster.js").status_code == 200
    assert httpx.get(server.url + "/style.css").status_code == 200
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/docs").status_code == 200
    missing = httpx.get(server.url + "/api/v1/nothing-here")
    assert missing.status_code == 404 and "detail" in missing.json()
    assert httpx.get(server.url + "/api/v1/jobs").status_code == 401


@needs_browser
def test_submit_watch_wait_and_cancel(server: Server, page: Any, tmp_path: Path) -> None:
    # A wrong token is refused with the API's message; the admin token signs in.
    page.goto(server.url + "/")
    shot(page, "01-sign-in")
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Sign-in refused: invalid API token")).to_be_visible()
    page.get_by_label("API token").fill(server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_contain_text("admin")
    expect(page.locator("h1")).to_have_text("Cluster")

    # Submit half a GPU from the form; the page follows the job until it runs and logs.
    gates = {name: tmp_path / f"gate-{name}" for name in ("first", "victim", "waiter")}
    goto(page, server, "/submit")
    script = gated_script(gates["first"], "hello from the console")
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    page.get_by_label("Command").fill(command)
    expect(page.locator(".args code")).to_have_count(3)
    page.get_by_label("GPUs").fill("0.5")
    page.get_by_label("Name").fill("console-job")
    shot(page, "05-submit")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    first = page.url.rsplit("/", 1)[1]
    expect(phase(page)).to_have_text("running")
    expect(page.get_by_test_id("log")).to_contain_text("hello from the console")
    expect(page.get_by_test_id("log-state")).to_contain_text("streaming")
    expect(page.locator("h1")).to_have_text(f"Job {first} · console-job")
    expect(page.locator(".facts").first).to_contain_text("0.5 of one GPU")
    shot(page, "04-job-detail")

    # A 0.3 job fills the GPU to 0.8; a 0.5 job must wait, and says why.
    victim = submit_api(server, 0.3, "victim", gates["victim"])
    wait_for(lambda: job_api(server, victim)["phase"] == "running")
    waiter = submit_api(server, 0.5, "waiter", gates["waiter"])
    reason = wait_for(
        lambda: (r := job_api(server, waiter)["reason"]) != "waiting for the scheduler" and r
    )
    assert job_api(server, waiter)["phase"] == "pending"

    # Cluster: one GPU bar with both slices, 0.2 free and, as the 0.5 job cannot use it,
    # 0.2 fragmented.
    goto(page, server, "/cluster")
    gpu = page.locator("[data-testid^='gpu-'][data-testid$='-0']")
    expect(gpu.locator(".gpu-head")).to_contain_text("A100")
    expect(gpu.locator(".gpu-head")).to_contain_text("80 GiB")
    expect(gpu.locator(f"a.slice[data-job='{first}']")).to_contain_text(f"#{first}")
    expect(gpu.locator(f"a.slice[data-job='{victim}']")).to_contain_text(f"#{victim}")
    expect(gpu.locator(".free.fragment")).to_have_count(1)
    expect(page.get_by_test_id("total-allocated")).to_contain_text("0.8")
    expect(page.get_by_test_id("total-fragmented")).to_contain_text("0.2")
    slice_box = gpu.locator(f"a.slice[data-job='{first}']").bounding_box()
    bar_box = gpu.locator(".gpu-bar").bounding_box()
    assert slice_box["width"] == pytest.approx(bar_box["width"] * 0.5, abs=4)
    shot(page, "02-cluster")

    # Queues: the pending job with the scheduler's reason; and on its own page.
    goto(page, server, "/queues")
    row = page.get_by_test_id("queue-default").locator(f"tr[data-job='{waiter}']")
    expect(row).to_contain_text(reason)
    shot(page, "03-queues")
    goto(page, server, f"/jobs/{waiter}")
    expect(phase(page)).to_have_text("pending")
    expect(page.get_by_test_id("job-reason")).to_contain_text(reason)

    # Jobs list, filtered by phase and by text.
    goto(page, server, "/jobs")
    table = page.get_by_test_id("jobs-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    shot(page, "06-jobs")
    page.get_by_label("Phase").select_option("pending")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator(f"tr[data-job='{waiter}']")).to_be_visible()
    assert "phase=pending" in page.url
    page.get_by_label("Phase").select_option("")
    page.get_by_label("Search").fill("victim")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator(f"tr[data-job='{victim}']")).to_be_visible()

    # Cancel the 0.3 job from its page; the waiting job then fits and starts.
    table.locator(f"tr[data-job='{victim}'] a").first.click()
    page.wait_for_url(re.compile(rf"#/jobs/{victim}$"))
    expect(phase(page)).to_have_text("running")
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(phase(page)).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.locator("tbody")).to_contain_text("cancel requested by admin")
    goto(page, server, f"/jobs/{waiter}")
    expect(phase(page)).to_have_text("running")

    # Open the first job's gate: its page shows it succeed and the log complete.
    gates["first"].touch()
    gates["waiter"].touch()
    goto(page, server, f"/jobs/{first}")
    expect(phase(page)).to_have_text("succeeded")
    expect(page.get_by_test_id("log")).to_contain_text("gate opened")
    expect(page.get_by_test_id("log-state")).to_contain_text("complete")

    # Cancelling an ended job: no button, and the API would refuse anyway.
    with server.client() as c:
        refused = c.post(f"/jobs/{first}/cancel")
    assert refused.status_code == 409


@needs_browser
def test_a_second_team_sees_none_of_the_first_teams_jobs(
    server: Server, page: Any, tmp_path: Path
) -> None:
    theirs = submit_api(server, 0.2, "admin-secret", tmp_path / "gate")
    wait_for(lambda: job_api(server, theirs)["phase"] == "running")
    with server.client() as c:
        assert c.post("/teams", json={"name": "vision", "quota_gpus": 0}).status_code == 201
        assert c.post("/users", json={"name": "ada", "team": "vision",
                                          "unix_user": "root"}).status_code == 201
        token = c.post("/tokens", json={"user": "ada"}).json()["token"]

    sign_in(page, server, token)
    expect(page.get_by_test_id("whoami")).to_contain_text("ada · team vision")

    goto(page, server, "/jobs")
    expect(page.get_by_text("0 jobs shown")).to_be_visible()
    expect(page.get_by_test_id("jobs-table")).not_to_contain_text("admin-secret")
    shot(page, "07-second-team-jobs")

    goto(page, server, f"/jobs/{theirs}")
    expect(page.get_by_text(f"Not found: no job {theirs}")).to_be_visible()
    expect(page.get_by_text("admin-secret")).to_have_count(0)

    goto(page, server, "/queues")
    expect(page.get_by_test_id("queue-vision")).to_be_visible()
    expect(page.get_by_test_id("queue-default")).to_have_count(0)

    # The GPU shows someone's slice, but not whose job it is.
    goto(page, server, "/cluster")
    gpu = page.locator("[data-testid^='gpu-'][data-testid$='-0']")
    expect(gpu.locator(".slice-hidden").first).to_contain_text("other team")
    expect(gpu.locator(f"[data-job='{theirs}']")).to_have_count(0)
    expect(gpu).not_to_contain_text(f"#{theirs}")
    shot(page, "09-second-team-cluster")

    # Her own job, submitted from the form, waits on her team's quota and says so.
    goto(page, server, "/submit")
    page.get_by_label("Command").fill("python -c 'print(1)'")
    page.get_by_label("GPUs").fill("0.25")
    expect(page.get_by_label("Queue")).to_have_value("vision")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    mine = page.url.rsplit("/", 1)[1]
    expect(phase(page)).to_have_text("pending")
    reason = wait_for(
        lambda: (r := job_api(server, mine)["reason"]) != "waiting for the scheduler" and r
    )
    expect(page.get_by_test_id("job-reason")).to_contain_text(reason)
    shot(page, "08-second-team-pending")
    (tmp_path / "gate").touch()

    # A reload keeps the tab signed in; signing out forgets the token.
    page.reload()
    expect(page.get_by_test_id("whoami")).to_contain_text("ada")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("Signed out.")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


@needs_browser
def test_pages_fit_a_phone_width_window(server: Server, browser: Any, tmp_path: Path) -> None:
    running = submit_api(server, 0.25, "phone-demo", tmp_path / "gate")
    wait_for(lambda: job_api(server, running)["phase"] == "running")
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        sign_in(page, server, server.token, screenshot="phone-01-sign-in")
        for name, route, ready in [
            ("phone-02-cluster", "/cluster", ".gpu-bar"),
            ("phone-03-queues", "/queues", "[data-testid^='queue-']"),
            ("phone-04-jobs", "/jobs", "[data-testid='jobs-table'] tbody tr[data-job]"),
            ("phone-05-job-detail", f"/jobs/{running}", "[data-testid='log'] >> text=hello"),
            ("phone-06-submit", "/submit", "#command"),
        ]:
            goto(page, server, route)
            expect(page.locator(ready).first).to_be_visible()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{route} is {width} px wide in a 390 px window"
            shot(page, name)
    finally:
        context.close()
        (tmp_path / "gate").touch()


SIM_NODES = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
    f"sim-node-{i},32000,131072,4,T4\n" for i in range(4)
)
SIM_POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)
SIM_SHARES = [
    (1, 250),
    (1, 500),
    (1, 300),
    (1, 1000),
    (1, 200),
    (1, 400),
    (1, 500),
    (1, 600),
    (0, 0),
]


def sim_pods(count: int = 40) -> str:
    rows = []
    for i in range(count):
        gpus, milli = SIM_SHARES[i % len(SIM_SHARES)]
        spec = "T4" if gpus else ""
        times = f"{i},{i + 3600},{i}"
        rows.append(f"sim-pod-{i:02d},2000,4096,{gpus},{milli},{spec},LS,Running,{times}\n")
    return SIM_POD_HEADER + "".join(rows)


@needs_browser
def test_simulator_uploads_traces_runs_policies_and_plots(
    server: Server, page: Any, browser: Any, tmp_path: Path
) -> None:
    nodes = tmp_path / "sim-nodes.csv"
    nodes.write_text(SIM_NODES)
    pods = tmp_path / "sim-pods.csv"
    pods.write_text(sim_pods())
    bad = tmp_path / "sim-bad.csv"
    bad.write_text(SIM_NODES.replace("sim-node-1,32000", "sim-node-1,lots"))

    sign_in(page, server, server.token)
    page.get_by_role("link", name="Simulator").click()
    expect(page.locator("h1")).to_have_text("Simulator")
    expect(page.get_by_role("link", name="Simulator")).to_have_attribute("aria-current", "page")

    # Uploads: a good node list is stored; a bad file is refused with the API's row and
    # column, and is not listed; the pod list goes up next.
    upload = page.get_by_label("Upload trace files")
    status = page.get_by_test_id("upload-status")
    traces = page.get_by_test_id("sim-traces")
    upload.set_input_files(str(nodes))
    expect(status).to_contain_text("Stored sim-nodes.csv: node list, 4 rows.")
    upload.set_input_files(str(bad))
    expect(status).to_contain_text(
        "sim-bad.csv was not stored: body: sim-bad.csv, row 3, column 'cpu_milli'"
    )
    expect(traces.locator("tr[data-trace='sim-bad.csv']")).to_have_count(0)
    upload.set_input_files(str(pods))
    expect(status).to_contain_text("Stored sim-pods.csv: pod list, 40 rows.")
    expect(traces.locator("tr[data-trace='sim-nodes.csv']")).to_contain_text("node list")
    expect(traces.locator("tr[data-trace='sim-pods.csv']")).to_contain_text("40")

    # Both files, fgd and random (bestfit and gpupool unticked), two seeds; run and follow it.
    page.get_by_label("Trace files", exact=True).check()
    page.get_by_label("Node list").select_option("sim-nodes.csv")
    page.get_by_label("Pod list").select_option("sim-pods.csv")
    expect(page.get_by_label("bestfit", exact=True)).to_be_checked()
    expect(page.get_by_label("fgd", exact=True)).to_be_checked()
    page.get_by_label("bestfit", exact=True).uncheck()
    page.get_by_label("gpupool", exact=True).uncheck()
    page.get_by_label("random", exact=True).check()
    page.get_by_label("Seeds").fill("42, 7")
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"#/sim\?run=\d+$"))
    run_id = page.url.rsplit("=", 1)[1]
    run_status = page.get_by_test_id("sim-run-status")
    expect(run_status).to_have_attribute("data-status", "done")
    expect(run_status).to_contain_text("Done: 4 replays")

    chart = page.get_by_test_id("sim-chart")
    expect(chart.locator("path.sim-line")).to_have_count(2)
    expect(chart.locator("path.sim-line[data-policy='fgd']")).to_have_count(1)
    expect(chart.locator("path.sim-line[data-policy='random']")).to_have_count(1)
    expect(page.get_by_test_id("sim-ideal")).to_have_count(1)
    expect(chart).to_contain_text("Unallocated GPUs (%)")
    expect(page.get_by_test_id("sim-legend")).to_contain_text("ideal")
    rows = page.get_by_test_id("sim-table").locator("tbody tr")
    expect(rows).to_have_count(2)
    # In the page's policy order, as they were sent.
    expect(rows.nth(0)).to_have_attribute("data-policy", "random")
    expect(rows.nth(1)).to_have_attribute("data-policy", "fgd")
    expect(page.get_by_test_id("sim-result")).to_contain_text("4 nodes, 16 GPUs, 40 tasks")
    expect(page.get_by_test_id("sim-runs").locator(f"tr[data-run='{run_id}']")).to_contain_text(
        "random, fgd"
    )
    # The chart's line follows the API's numbers: the result is the API's.
    with server.client() as c:
        result = c.get(f"/sim/runs/{run_id}").json()["result"]
    assert list(result["policies"]) == ["random", "fgd"]
    at_90 = result["policies"]["fgd"]["unallocated_gpu_pct"]["90"]
    if at_90 is not None:
        expect(rows.nth(1).locator("td").nth(1)).to_have_text(f"{at_90:.1f}")
    shot(page, "10-simulator")

    # A run opened from its link (as from the list) shows again with its settings, on a
    # phone-width window too, without sideways scrolling.
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    phone = context.new_page()
    phone.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    phone.on("pageerror", lambda exc: errors.append(str(exc)))
    phone.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and not msg.text.startswith("Failed to load resource")
            and errors.append(msg.text)
        ),
    )
    try:
        sign_in(phone, server, server.token)
        goto(phone, server, f"/sim?run={run_id}")
        expect(phone.get_by_test_id("sim-chart").locator("path.sim-line")).to_have_count(2)
        expect(phone.get_by_test_id("sim-table").locator("tbody tr")).to_have_count(2)
        expect(phone.get_by_label("Seeds")).to_have_value("42, 7")
        expect(phone.get_by_label("random", exact=True)).to_be_checked()
        expect(phone.get_by_label("bestfit", exact=True)).not_to_be_checked()
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"/sim is {width} px wide in a 390 px window"
        box = phone.get_by_test_id("sim-chart").bounding_box()
        assert box is not None and 300 <= box["width"] <= 390
        shot(phone, "phone-07-simulator")
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


def teardown_module() -> None:
    # Keep the artefacts folder tidy when the browser tests were skipped.
    if ARTIFACTS.exists() and not any(ARTIFACTS.iterdir()):
        shutil.rmtree(ARTIFACTS)
