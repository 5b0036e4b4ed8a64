"""The SDK against a scripted transport (httpx.MockTransport): what each method sends, how
answers become models, and how failures become one-line ApiErrors. End-to-end tests against
a real server live with the server tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.sdk import ApiError, AsyncClient, Client, ServerConfig

CONFIG = ServerConfig("http://gp.test", "gp_secret")
Handler = Callable[[httpx.Request], httpx.Response]


def job_json(
    job_id: str, phase: str = "pending", name: str = "train", **extra: Any
) -> dict[str, Any]:
    view = {
        "id": job_id,
        "name": name,
        "team": "default",
        "user": "admin",
        "queue": "default",
        "phase": phase,
        "priority": 0,
        "spec": {"command": ["python", "train.py"], "gpus": 0.5},
        "created_at": "2026-01-01T00:00:00",
    }
    return view | extra


class Recorder:
    """A scripted server: ``routes`` maps "METHOD /path" to a handler; requests are kept."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = f"{request.method} {request.url.path}"
        if key not in self.routes:
            return httpx.Response(404, json={"detail": f"no route {key}"})
        return self.routes[key](request)

    def client(self) -> Client:
        return Client(config=CONFIG, transport=httpx.MockTransport(self))


def answer(status: int, body: Any) -> Handler:
    return lambda _request: httpx.Response(status, json=body)


def test_submit_sends_the_token_and_only_the_fields_given() -> None:
    server = Recorder({"POST /api/v1/jobs": answer(201, job_json("7"))})
    with server.client() as gp:
        view = gp.submit({"command": ["python", "train.py"], "gpus": 0.5, "memory": "16GiB"})
    assert view.id == "7" and view.phase is Phase.PENDING
    sent = server.requests[0]
    assert sent.headers["authorization"] == "Bearer gp_secret"
    assert json.loads(sent.content) == {
        "command": ["python", "train.py"],
        "gpus": 0.5,
        "memory": 16384,
    }


def test_a_bad_spec_fails_before_any_request() -> None:
    server = Recorder({})
    with server.client() as gp, pytest.raises(ValidationError, match="gpuz"):
        gp.submit({"command": ["x"], "gpuz": 1})
    assert server.requests == []


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (422, {"detail": "gpus: use a fraction below 1"}, "gpus: use a fraction below 1"),
        (
            422,
            {"detail": [{"loc": ["body", "gpus"], "msg": "too many"}, {"loc": [], "msg": "x"}]},
            "body.gpus: too many; x",
        ),
        (403, {"detail": "queue 'x' is not your team's\nsecond line"}, "queue 'x' is not your"),
        (500, "Internal Server Error", "HTTP 500 Internal Server Error"),
    ],
)
def test_errors_become_one_line(status: int, body: Any, message: str) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    server = Recorder({"POST /api/v1/jobs": handler})
    with server.client() as gp, pytest.raises(ApiError) as info:
        gp.submit(JobSpec(command=["x"]))
    assert info.value.status == status
    assert info.value.message.startswith(message)
    assert "\n" not in info.value.message


def test_an_answer_outside_the_contract_is_an_api_error() -> None:
    server = Recorder({"GET /api/v1/whoami": answer(200, {"user": "ada"})})
    with server.client() as gp, pytest.raises(ApiError, match=r"unexpected answer.*team"):
        gp.whoami()


def test_a_name_means_the_newest_job_of_that_name() -> None:
    server = Recorder(
        {
            "GET /api/v1/jobs": answer(200, [job_json("12"), job_json("9")]),
            "GET /api/v1/jobs/12": answer(200, job_json("12", "running")),
            "POST /api/v1/jobs/12/cancel": answer(200, job_json("12", "running")),
        }
    )
    with server.client() as gp:
        assert gp.job("train").phase is Phase.RUNNING
        gp.cancel("train")
    assert server.requests[0].url.params["name"] == "train"
    assert [r.url.path for r in server.requests][-1] == "/api/v1/jobs/12/cancel"


def test_an_unknown_name_is_a_404() -> None:
    server = Recorder({"GET /api/v1/jobs": answer(200, [])})
    with server.client() as gp, pytest.raises(ApiError) as info:
        gp.job("nosuch")
    assert (info.value.status, info.value.message) == (404, "no job named 'nosuch'")


def test_submit_takes_the_spec_fields_as_keywords() -> None:
    server = Recorder({"POST /api/v1/jobs": answer(201, job_json("8"))})
    with server.client() as gp:
        assert gp.submit(command=["python", "train.py"], gpus=0.5, memory="16GiB").id == "8"
        with pytest.raises(TypeError, match="not both"):
            gp.submit({"command": ["x"]}, gpus=1)
        with pytest.raises(TypeError, match="needs a job"):
            gp.submit()
        with pytest.raises(ValidationError, match="gpuz"):
            gp.submit(command=["x"], gpuz=1)
    assert len(server.requests) == 1
    assert json.loads(server.requests[0].content) == {
        "command": ["python", "train.py"], "gpus": 0.5, "memory": 16384}


def test_job_filters_go_in_the_query() -> None:
    server = Recorder({"GET /api/v1/jobs": answer(200, [])})
    with server.client() as gp:
        gp.jobs()
        gp.jobs(phase="running", queue="vision", all_teams=True)
        gp.jobs(phase=["pending", "running"], order="queue", limit=7)
    assert dict(server.requests[0].url.params) == {"order": "newest", "limit": "1000"}
    assert dict(server.requests[1].url.params) == {
        "phase": "running",
        "queue": "vision",
        "order": "newest",
        "limit": "1000",
    }
    assert server.requests[2].url.params.multi_items() == [
        ("order", "queue"), ("phase", "pending"), ("phase", "running"), ("limit", "7")]


def test_jobs_follow_the_next_cursor_until_the_last_page() -> None:
    pages = {None: ([{"n": 1}], "c1"), "c1": ([{"n": 2}], None)}
    seen: list[str | None] = []

    def reply(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        seen.append(cursor)
        rows, after = pages[cursor]
        headers = {"X-Next-Cursor": after} if after else {}
        return httpx.Response(200, json=[job_json(str(r["n"])) for r in rows], headers=headers)

    server = Recorder({"GET /api/v1/jobs": reply})
    with server.client() as gp:
        assert [j.id for j in gp.jobs()] == ["1", "2"]
    assert seen == [None, "c1"]


def test_follow_logs_reads_on_from_each_offset_until_complete() -> None:
    chunks = iter(
        [
            {"data": "one\n", "offset": 4, "complete": False},
            {"data": "", "offset": 4, "complete": False},
            {"data": "two\n", "offset": 8, "complete": True},
        ]
    )
    server = Recorder(
        {"GET /api/v1/jobs/3/logs": lambda _r: httpx.Response(200, json=next(chunks))}
    )
    with server.client() as gp:
        assert list(gp.follow_logs(3, poll=0)) == ["one\n", "two\n"]
    assert [r.url.params["offset"] for r in server.requests] == ["0", "4", "4"]


def test_wait_returns_the_final_view_or_times_out() -> None:
    phases = iter(["pending", "running", "failed"])
    server = Recorder(
        {"GET /api/v1/jobs/5": lambda _r: httpx.Response(200, json=job_json("5", next(phases)))}
    )
    with server.client() as gp:
        assert gp.wait("5", poll=0).phase is Phase.FAILED
    stuck = Recorder({"GET /api/v1/jobs/5": answer(200, job_json("5", "pending"))})
    with stuck.client() as gp, pytest.raises(TimeoutError, match="job 5 is still pending"):
        gp.wait(5, timeout=0.05, poll=0.01)


def test_admin_calls_send_their_bodies() -> None:
    team = {"name": "vision", "quota_gpus": 2, "borrow_limit_gpus": 1}
    server = Recorder(
        {
            "POST /api/v1/teams": answer(201, team),
            "PATCH /api/v1/teams/vision": answer(200, team),
            "POST /api/v1/users": answer(201, {"name": "ada", "team": "vision", "admin": False}),
            "POST /api/v1/tokens": answer(201, {"user": "ada", "token": "gp_new"}),
        }
    )
    with server.client() as gp:
        gp.create_team("vision", quota_gpus=2, borrow_limit_gpus=1)
        gp.update_team("vision", borrow_limit_gpus=1)
        gp.create_user("ada", "vision")
        assert gp.create_token("ada").token == "gp_new"
    bodies = [json.loads(r.content) for r in server.requests]
    assert bodies == [
        team,
        {"borrow_limit_gpus": 1},
        {"name": "ada", "team": "vision", "admin": False},
        {"user": "ada"},
    ]


def test_team_fair_share_fields_are_sent_and_cleared_only_when_asked() -> None:
    team = {"name": "vision", "quota_gpus": 2, "borrow_limit_gpus": 1}
    server = Recorder({"POST /api/v1/teams": answer(201, team),
                       "PATCH /api/v1/teams/vision": answer(200, team)})
    with server.client() as gp:
        gp.create_team("vision", 2, 1, weight=3, cohort="lab", lend_limit_gpus=0.5)
        gp.create_team("vision", 2, 1)  # defaults: not sent (servers before fair share)
        gp.update_team("vision", weight=0.25)  # cohort and lending limit kept
        gp.update_team("vision", cohort=None, lend_limit_gpus=None)  # both cleared
        gp.update_team("vision", cohort="lab2", lend_limit_gpus=1)
        with pytest.raises(ValidationError, match="weight"):
            gp.create_team("vision", weight=0)
        with pytest.raises(ValidationError, match="cohort"):
            gp.update_team("vision", cohort="no spaces allowed")
    assert [json.loads(r.content) for r in server.requests] == [
        team | {"weight": 3, "cohort": "lab", "lend_limit_gpus": 0.5},
        team,
        {"weight": 0.25},
        {"cohort": None, "lend_limit_gpus": None},
        {"cohort": "lab2", "lend_limit_gpus": 1},
    ]


def test_async_team_calls_send_the_same_bodies() -> None:
    team = {"name": "vision", "quota_gpus": 0, "borrow_limit_gpus": 0}
    server = Recorder({"POST /api/v1/teams": answer(201, team),
                       "PATCH /api/v1/teams/vision": answer(200, team)})

    async def calls() -> None:
        async with AsyncClient(config=CONFIG,
                               transport=httpx.MockTransport(server)) as gp:
            await gp.create_team("vision", weight=2, cohort="lab")
            await gp.update_team("vision", cohort=None)

    asyncio.run(calls())
    assert [json.loads(r.content) for r in server.requests] == [
        team | {"weight": 2, "cohort": "lab"}, {"cohort": None}]


def test_connection_refused_is_status_0() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    with Client(config=CONFIG, transport=transport) as gp, pytest.raises(ApiError) as info:
        gp.nodes()
    assert info.value.unreachable
    assert info.value.message == (
        "cannot reach the gpupool server at http://gp.test: [Errno 111] Connection refused"
    )


def test_the_async_client_has_the_same_behaviour() -> None:
    chunks = iter(
        [
            {"data": "a", "offset": 1, "complete": False},
            {"data": "b", "offset": 2, "complete": True},
        ]
    )
    server = Recorder(
        {
            "GET /api/v1/jobs": answer(200, [job_json("4", name="nb")]),
            "GET /api/v1/jobs/4": answer(200, job_json("4", "succeeded", name="nb")),
            "GET /api/v1/jobs/4/logs": lambda _r: httpx.Response(200, json=next(chunks)),
            "GET /api/v1/nodes": answer(403, {"detail": "not allowed"}),
        }
    )

    async def scenario() -> list[str]:
        async with AsyncClient(config=CONFIG, transport=httpx.MockTransport(server)) as gp:
            assert (await gp.wait("nb", poll=0)).phase is Phase.SUCCEEDED
            with pytest.raises(ApiError, match="not allowed"):
                await gp.nodes()
            return [text async for text in gp.follow_logs("4", poll=0)]

    assert asyncio.run(scenario()) == ["a", "b"]
