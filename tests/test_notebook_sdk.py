"""The SDK's notebook methods (Client and AsyncClient) against scripted transports
(httpx.MockTransport): what each sends, how answers become models, how waiting for a
notebook ends; and the gateway addresses derived from a notebook's URL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gpupool.schemas.jobs import JobView, Kind
from gpupool.sdk import ApiError, AsyncClient, Client, NotebookNotReady, ServerConfig
from gpupool.sdk.notebooks import gateway_base, websocket_url
from notebook_fake import job_json

CONFIG = ServerConfig("http://gp.test", "gp_secret")


class Script:
    """``routes``: "METHOD /path" -> a handler, or a list of answers given in turn (the
    last one again and again); the requests are kept."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get(f"{request.method} {request.url.path}")
        if route is None:
            return httpx.Response(404, json={"detail": "no such route"})
        if callable(route):
            return route(request)  # type: ignore[no-any-return]
        status, body = route[0] if len(route) == 1 else route.pop(0)
        return httpx.Response(status, json=body)

    def client(self) -> Client:
        return Client(config=CONFIG, transport=httpx.MockTransport(self))

    def sent(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def test_create_notebook_sends_the_kind_and_only_the_fields_given() -> None:
    server = Script({"POST /api/v1/jobs": [(201, job_json("7", phase="pending"))]})
    with server.client() as gp:
        view = gp.create_notebook("nb", gpus=0.25, gpu_memory="10GiB", idle_timeout_s=1800)
        gp.create_notebook()
    assert view.kind is Kind.NOTEBOOK and view.id == "7"
    assert server.sent(0) == {"kind": "notebook", "name": "nb", "gpus": 0.25,
                              "gpu_memory": 10240, "idle_timeout_s": 1800}
    assert server.sent(1) == {"kind": "notebook"}
    assert server.requests[0].headers["Idempotency-Key"]


def test_a_bad_notebook_fails_before_any_request() -> None:
    server = Script({})
    with server.client() as gp:
        with pytest.raises(ValidationError, match="idle_timeout_s"):
            gp.create_notebook(idle_timeout_s=1)  # below the minimum
        with pytest.raises(ValidationError, match="name"):
            gp.create_notebook("no spaces allowed")
    assert server.requests == []


def test_notebooks_list_by_kind_and_follow_the_pages() -> None:
    def pages(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("cursor") == "c2":
            return httpx.Response(200, json=[job_json("1")])
        return httpx.Response(200, json=[job_json("3"), job_json("2")],
                              headers={"X-Next-Cursor": "c2"})

    server = Script({"GET /api/v1/jobs": pages})
    with server.client() as gp:
        found = gp.notebooks(["running", "suspended"])
        gp.jobs(kind="job")
        gp.jobs()
    assert [v.id for v in found] == ["3", "2", "1"]
    first = server.requests[0].url.params
    assert first.get_list("phase") == ["running", "suspended"] and first["kind"] == "notebook"
    assert server.requests[1].url.params["cursor"] == "c2"
    assert server.requests[2].url.params["kind"] == "job"
    assert "kind" not in server.requests[4].url.params  # both kinds, as before notebooks
    with server.client() as gp, pytest.raises(ValueError):
        gp.jobs(kind="vm")


def test_suspend_resume_and_open_take_a_name_or_an_id() -> None:
    server = Script({
        "GET /api/v1/jobs": [(200, [job_json("9", name="lab")])],
        "POST /api/v1/jobs/9/suspend": [(202, job_json("9", name="lab", phase="suspended"))],
        "POST /api/v1/jobs/9/resume": [(202, job_json("9", name="lab", phase="pending"))],
        "POST /api/v1/jobs/9/open": [(200, {"url": "http://gw:8471/nb/9/signin?t=x"})],
    })
    with server.client() as gp:
        assert gp.suspend("lab").phase == "suspended"
        assert gp.resume(9).phase == "pending"
        assert gp.open_url("lab") == "http://gw:8471/nb/9/signin?t=x"
    lookups = [r.url.params for r in server.requests if r.method == "GET"]
    assert [(p["name"], p["kind"], p["limit"]) for p in lookups] == [("lab", "notebook", "1")] * 2
    assert [r.url.path for r in server.requests if r.method == "POST"] == [
        "/api/v1/jobs/9/suspend", "/api/v1/jobs/9/resume", "/api/v1/jobs/9/open"]


def test_a_notebook_ref_must_name_a_notebook() -> None:
    server = Script({"GET /api/v1/jobs": [(200, [])],
                     "GET /api/v1/jobs/4": [(200, job_json("4", kind="job"))],
                     "POST /api/v1/jobs/4/suspend": [(409, {"detail": "job 4 is not a "
                                                                    "notebook"})]})
    with server.client() as gp:
        with pytest.raises(ApiError, match="no notebook named 'ghost'") as caught:
            gp.notebook("ghost")
        assert caught.value.status == 404
        with pytest.raises(ApiError, match="job 4 is not a notebook"):
            gp.notebook("4")
        with pytest.raises(ApiError, match="job 4 is not a notebook") as refused:
            gp.suspend("4")  # an id goes to the server, which says no
        assert refused.value.status == 409


def test_wait_ready_returns_once_the_url_is_set() -> None:
    url = "http://gw:8471/nb/7/lab"
    server = Script({"GET /api/v1/jobs/7": [
        (200, job_json("7", phase="pending")), (200, job_json("7")),
        (200, job_json("7", url=url, idle_since="2026-03-01T11:59:00Z"))]})
    with server.client() as gp:
        view = gp.wait_ready("7", poll=0)
    assert view.url == url and view.idle_since is not None
    assert len(server.requests) == 3


@pytest.mark.parametrize("answer, message", [
    (job_json("7", phase="suspended"), "notebook nb (7) is suspended: resume it first"),
    (job_json("7", phase="cancelled", reason="deleted by ada"),
     "notebook nb (7) ended: cancelled: deleted by ada"),
    (job_json("7", phase="failed"), "notebook nb (7) ended: failed"),
    (job_json("7", kind="job", phase="running"), "7 (nb) is a job, not a notebook"),
])
def test_wait_ready_says_when_waiting_cannot_help(answer: dict[str, Any], message: str) -> None:
    server = Script({"GET /api/v1/jobs/7": [(200, answer)]})
    with server.client() as gp, pytest.raises(NotebookNotReady) as caught:
        gp.wait_ready(7, poll=0)
    assert caught.value.message == message
    assert isinstance(caught.value.view, JobView)


def test_wait_ready_times_out_naming_the_notebook() -> None:
    server = Script({"GET /api/v1/jobs/7": [(200, job_json("7"))]})
    with server.client() as gp, pytest.raises(TimeoutError, match=r"notebook 7 is still "
                                              r"running after 0 s \(its Jupyter server"):
        gp.wait_ready("7", timeout=0, poll=0)


def test_the_async_client_has_the_same_notebook_methods() -> None:
    url = "http://gw:8471/nb/5/lab"
    server = Script({
        "POST /api/v1/jobs": [(201, job_json("5", name="a", phase="pending"))],
        "GET /api/v1/jobs": [(200, [job_json("5", name="a")])],
        "GET /api/v1/jobs/5": [(200, job_json("5", name="a", phase="starting")),
                               (200, job_json("5", name="a", url=url))],
        "POST /api/v1/jobs/5/open": [(200, {"url": "http://gw/one-time"})],
        "POST /api/v1/jobs/5/suspend": [(202, job_json("5", name="a", phase="suspended"))],
    })

    async def scenario() -> tuple[str, str | None, str, str, int]:
        async with AsyncClient(config=CONFIG, transport=httpx.MockTransport(server)) as gp:
            made = await gp.create_notebook("a", gpus=0.5)
            ready = await gp.wait_ready("a", poll=0)
            sign_in = await gp.open_url("a")
            suspended = await gp.suspend(5)
            listed = await gp.notebooks()
            return made.id, ready.url, sign_in, suspended.phase.value, len(listed)

    assert asyncio.run(scenario()) == ("5", url, "http://gw/one-time", "suspended", 1)
    assert server.sent(0) == {"kind": "notebook", "name": "a", "gpus": 0.5}


@pytest.mark.parametrize("url, base, ws", [
    ("http://gw:8471/nb/7/lab", "http://gw:8471/nb/7/", "ws://gw:8471/nb/7/t/1"),
    ("https://gw.example/pool/nb/12/lab/?reset", "https://gw.example/pool/nb/12/",
     "wss://gw.example/pool/nb/12/t/1"),
])
def test_the_gateway_prefix_comes_from_the_url(url: str, base: str, ws: str) -> None:
    assert gateway_base(url) == base
    assert websocket_url(base, "t/1") == ws


@pytest.mark.parametrize("url", ["http://gw:8471/nb/7/tree", "ftp://gw/nb/7/lab", "/nb/7/lab"])
def test_an_address_that_is_not_a_notebooks_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not a notebook address"):
        gateway_base(url)
