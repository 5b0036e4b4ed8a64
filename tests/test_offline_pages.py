"""No page of the server loads anything from another host (issue 15): a machine without
internet gets a working console, /docs (Swagger UI) and /redoc (ReDoc).

Two checks against a real `gpupool up`:

- every HTML page the server serves (the console's *.html, /docs, /redoc) refers to no
  other host in what it loads (script, link, img, iframe, ... ; inline and linked CSS's
  ``url()`` and ``@import``), and the docs pages forbid other hosts in their CSP;
- in headless Chromium (Debian's, driven by Playwright) with every host but 127.0.0.1
  blocked, /docs renders one Swagger UI block per operation of the OpenAPI schema, /redoc
  renders the operations, and every console page loads, with no request to another host and
  no JavaScript error (a CSP violation is one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from gpupool.web import static_dir
from html_loads import css_urls, foreign, page_loads
from server_harness import Server, make_server

CHROMIUM = "/usr/bin/chromium"
# As tests/test_console.py: no background networking. The resolver rule makes every host
# name but 127.0.0.1 unresolvable, so the network is blocked below the page's own routing too.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
WAIT_MS = 30_000
DOCS_PAGES = ("/docs", "/redoc")
CONSOLE_ROUTES = ("cluster", "queues", "jobs", "notebooks", "services", "pipelines", "usage",
                  "submit", "sim")
SERVER_SRC = Path(__file__).resolve().parent.parent / "src" / "gpupool" / "server"

def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found: install Debian's chromium package (scripts/test.sh does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    return None


needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")


def _html_pages() -> list[str]:
    """Every HTML page the server serves: the console's files and the API docs pages."""
    root = static_dir()
    console = sorted("/" + str(p.relative_to(root)) for p in root.rglob("*.html"))
    return ["/", *console, *DOCS_PAGES]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("offline"), "1xA100-80GB")


# ---- the pages' HTML and CSS ------------------------------------------------------------


def test_only_the_docs_module_serves_html_from_server_code() -> None:
    """The page list of this test is complete: server code that answers HTML other than
    the docs pages must add its pages to ``_html_pages``."""
    serving = sorted(
        str(path.relative_to(SERVER_SRC))
        for path in SERVER_SRC.rglob("*.py")
        if "HTMLResponse" in path.read_text()
    )
    assert serving == ["api/docs_pages.py", "gateway/pages.py"], (
        f"{serving}: a new HTML page? add it to _html_pages in this test")


def test_the_gateways_own_pages_load_nothing_from_another_host() -> None:
    """The gateway's sign-in and starting pages (its other answers are JupyterLab's, whose
    news and update calls are off: tests/test_notebook_loop.py)."""
    from starlette.requests import Request

    from gpupool.server.gateway import pages

    browser = Request({"type": "http", "method": "GET", "path": "/nb/1/lab", "headers": [
        (b"accept", b"text/html")], "query_string": b""})
    answers = [pages.sign_in_needed(browser, 1, "no credential"), pages.bad_ticket("used"),
               pages.not_ready(browser, 1, "suspended", True),
               pages.not_ready(browser, 1, "starting", False)]
    for answer in answers:
        text = bytes(answer.body).decode()
        assert answer.headers["content-type"].startswith("text/html"), text
        loads = page_loads(text)
        outside = [u for u in loads.urls if foreign("http://127.0.0.1:8471/nb/1/lab", u,
                                                    "http://127.0.0.1:8471")]
        assert not outside and not loads.stylesheets, text


@pytest.mark.parametrize("path", _html_pages())
def test_page_loads_nothing_from_another_host(server: Server, path: str) -> None:
    page_url = server.url + path
    response = httpx.get(page_url, timeout=30)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:200]}"
    assert response.headers["content-type"].startswith("text/html")
    loads = page_loads(response.text)
    outside = [u for u in loads.urls if foreign(page_url, u, server.url)]
    assert not outside, f"{path} loads from another host: {outside}"
    for href in loads.stylesheets:
        css_url = urljoin(page_url, href)
        css = httpx.get(css_url, timeout=30)
        assert css.status_code == 200, f"{path}: stylesheet {href}: {css.status_code}"
        outside = [u for u in css_urls(css.text) if foreign(css_url, u, server.url)]
        assert not outside, f"{path}: {href} loads from another host: {outside}"


@pytest.mark.parametrize("path", DOCS_PAGES)
def test_docs_pages_forbid_other_hosts(server: Server, path: str) -> None:
    response = httpx.get(server.url + path, timeout=30)
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert "http" not in policy and "*" not in policy, policy
    assert "<script>" not in response.text  # no inline script: script-src 'self' holds
    assert 'data-openapi-url="/openapi.json"' in response.text


def test_docs_assets_are_served_and_nothing_else(server: Server) -> None:
    for name, kind in [("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css"),
                       ("redoc.standalone.js", "javascript"), ("swagger-init.js", "javascript"),
                       ("redoc-init.js", "javascript")]:
        response = httpx.get(f"{server.url}/docs/assets/{name}", timeout=30)
        assert response.status_code == 200, name
        assert kind in response.headers["content-type"], name
        assert len(response.content) > 100, name
    missing = httpx.get(server.url + "/docs/assets/..%2F..%2Fapp.py", timeout=30)
    assert missing.status_code == 404
    assert httpx.get(server.url + "/docs/assets/nothing.js", timeout=30).status_code == 404
    # the docs routes are not part of the API's schema
    paths = httpx.get(server.url + "/openapi.json", timeout=30).json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


def test_docs_pages_honour_the_root_path_and_patch_out_foreign_loads() -> None:
    """Behind a proxy at a prefix the pages name their files under it; the ReDoc bundle as
    served no longer names Redocly's CDN; an app without a schema gets no pages."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from gpupool.server.api.docs_pages import ASSETS, PATCHES, install_docs_pages

    app = FastAPI(title="t", docs_url=None, redoc_url=None)
    install_docs_pages(app)
    with TestClient(app, root_path="/gp") as client:
        page = client.get("/docs").text
        assert 'data-openapi-url="/gp/openapi.json"' in page
        assert 'src="/gp/docs/assets/swagger-ui-bundle.js"' in page
        assert 'href="/gp/docs/assets/swagger-ui.css"' in page
        assert 'src="/gp/docs/assets/redoc.standalone.js"' in client.get("/redoc").text
        redoc = client.get("/docs/assets/redoc.standalone.js").content
    for name, replacements in PATCHES.items():
        original = ASSETS[name][0].read_bytes()
        for old, _new in replacements:
            assert old in original, f"{name}: the patch no longer matches {old!r}"
    assert b"cdn.redoc.ly" not in redoc
    bare = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    install_docs_pages(bare)
    assert TestClient(bare).get("/docs").status_code == 404


# ---- in Chromium, with the network blocked ----------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Offline:
    """A page whose requests to any origin but the server's are aborted and recorded, and
    whose JavaScript errors and console errors are recorded."""

    def __init__(self, browser: Any, origin: str) -> None:
        self.origin = origin
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if foreign(self.origin + "/", url, self.origin):
            self.blocked.append(url)
            route.abort()
        else:
            route.continue_()

    def _console(self, msg: Any) -> None:
        # The browser's note on an HTTP error status is expected (e.g. a refused token).
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(msg.text)

    def check(self) -> None:
        assert not self.blocked, f"requests to other hosts: {self.blocked}"
        assert not self.errors, f"JavaScript errors: {self.errors}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: Any, server: Server) -> Iterator[Offline]:
    tab = Offline(browser, server.url)
    yield tab
    tab.close()


def _operations(server: Server) -> list[tuple[str, str]]:
    schema = httpx.get(server.url + "/openapi.json", timeout=30).json()
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return [(m, p) for p, item in schema["paths"].items() for m in item if m in methods]


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=WAIT_MS)
    return pw_expect(locator)


@needs_browser
def test_swagger_ui_renders_every_operation_offline(server: Server, offline: Offline) -> None:
    operations = _operations(server)
    assert len(operations) > 10
    page = offline.page
    page.goto(server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("gpupool")
    expect(page.locator(".opblock")).to_have_count(len(operations))
    expect(page.locator(".opblock-summary-path[data-path='/api/v1/jobs']").first).to_be_visible()
    # An operation opens and shows its parameters (Swagger UI's own code, not just markup).
    page.locator(".opblock-summary-path[data-path='/api/v1/jobs/{job_id}']").first.click()
    expect(page.locator(".opblock.is-open .parameters-container").first).to_be_visible()
    offline.check()


@needs_browser
def test_redoc_renders_the_operations_offline(server: Server, offline: Offline) -> None:
    operations = _operations(server)
    page = offline.page
    page.goto(server.url + "/redoc")
    expect(page.locator(".api-info h1").first).to_contain_text("gpupool")
    # ReDoc marks each operation's section (twice, nested) with its operationId.
    sections = ("() => new Set([...document.querySelectorAll(\"[data-section-id^='operation/']\")]"
                ".map(e => e.dataset.sectionId)).size")
    page.wait_for_function(f"({sections})() === {len(operations)}")
    expect(page.get_by_text("API docs by Redocly")).to_be_visible()  # its logo: not loaded
    offline.check()


@needs_browser
def test_every_console_page_loads_offline(server: Server, offline: Offline) -> None:
    page = offline.page
    page.goto(server.url + "/")
    expect(page.get_by_label("API token")).to_be_visible()
    page.get_by_label("API token").fill(server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_be_visible()
    for route in CONSOLE_ROUTES:
        page.goto(f"{server.url}/#/{route}")
        expect(page.locator(f"#nav a[data-route='{route}']")).to_have_attribute(
            "aria-current", re.compile(".+"))
        expect(page.locator("#view h1").first).to_be_visible()
        page.wait_for_load_state("networkidle")
    offline.check()
