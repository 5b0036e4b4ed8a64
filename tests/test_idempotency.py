"""``Idempotency-Key`` on POST /api/v1/jobs, on each backend: a retry answers the first job,
never a second one; the key is the user's own; a changed body or a malformed key is refused
naming the header.

Tier: the middle one (inprocess_api: the real app over a real SQLite file or PostgreSQL
schema, in this process, one server per backend for the module). Nothing here runs a job or
needs a port: concurrent duplicates are concurrent requests from threads (each request on
its own event loop, as uvicorn's workers serve them), and the SDK talks to the app through
the test client's transport."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gpupool.executors import accounts
from gpupool.sdk import ApiError
from inprocess_api import InProcessServer
from middle_tier import backend_store
from server_harness import backend_params

PY = sys.executable
HEADER = "Idempotency-Key"


@pytest.fixture(scope="module", params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[InProcessServer]:
    home = tmp_path_factory.mktemp("idem")
    for db in backend_store(request.param, home):
        yield InProcessServer(home / "home", nodes=1, cards=1, db=db)


def spec(name: str, **more: object) -> dict[str, object]:
    return {"command": [PY, "-c", "pass"], "name": name, **more}


def post(c: httpx.Client, body: dict[str, object], key: str | bytes) -> httpx.Response:
    return c.post("/jobs", json=body, headers={HEADER: key})


def count(c: httpx.Client, name: str) -> int:
    response = c.get("/jobs", params={"name": name})
    assert response.status_code == 200, response.text
    return len(response.json())


def test_a_retry_answers_the_first_job_and_queues_no_second(server: InProcessServer) -> None:
    name, key = f"retry-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    with server.client(server.token) as c:
        first = post(c, spec(name), key)
        again = post(c, spec(name), key)
        reordered = c.post("/jobs", content=f'{{"name": "{name}", "command": ["{PY}", "-c", '
                           '"pass"], "gpus": 0}', headers={HEADER: key,
                                                         "Content-Type": "application/json"})
        assert first.status_code == again.status_code == reordered.status_code == 201
        assert first.json()["id"] == again.json()["id"] == reordered.json()["id"]
        assert count(c, name) == 1
        # no key: every submit is a new job
        assert post(c, spec(name), str(uuid.uuid4())).json()["id"] != first.json()["id"]
        assert c.post("/jobs", json=spec(name)).status_code == 201
        assert count(c, name) == 3


def test_concurrent_duplicates_make_one_job(server: InProcessServer) -> None:
    name, key = f"race-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    with server.client(server.token) as c, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(c, spec(name), key), range(16)))
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        assert count(c, name) == 1


def test_the_same_key_with_another_body_is_refused_naming_the_header(
        server: InProcessServer) -> None:
    name, key = f"diff-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    with server.client(server.token) as c:
        first = post(c, spec(name), key)
        assert first.status_code == 201, first.text
        other = post(c, spec(name, priority=5), key)
        assert other.status_code == 422
        assert HEADER in other.json()["detail"]
        assert f"job {first.json()['id']}" in other.json()["detail"]
        assert count(c, name) == 1


@pytest.mark.parametrize("key", ["k" * 201, "", b"caf\xc3\xa9", "tab\there", "del\x7f"],
                         ids=["too-long", "empty", "non-ascii", "tab", "del"])
def test_malformed_keys_are_refused(server: InProcessServer, key: str | bytes) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    with server.client(server.token) as c:
        answer = post(c, spec(name), key)
        assert answer.status_code == 422, answer.text
        assert HEADER in str(answer.json()["detail"])
        assert count(c, name) == 0
        longest = (uuid.uuid4().hex + " ~!") * 6  # 1 to 200 printable ASCII, space included
        assert post(c, spec(name), longest[:200]).status_code == 201


def test_keys_are_per_user(server: InProcessServer) -> None:
    name, key = f"user-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    other = f"idem{uuid.uuid4().hex[:6]}"
    with server.client(server.token) as admin:
        team = admin.get("/whoami").json()["team"]
        made = admin.post("/users", json={"name": other, "team": team})
        assert made.status_code == 201, made.text
        token = admin.post("/tokens", json={"user": other}).json()["token"]
        try:
            mine = post(admin, spec(name, gpus=1), key)
            with server.client(token) as them:
                theirs = post(them, spec(name, gpus=1), key)
                assert theirs.status_code == 201, theirs.text
                assert theirs.json()["id"] != mine.json()["id"]
                assert theirs.json()["user"] == other
                # and their different body under my key is no conflict either
                assert post(them, spec(name, gpus=1, priority=1), str(uuid.uuid4())
                            ).status_code == 201
            assert count(admin, name) == 3
        finally:
            unix = made.json().get("unix_user")
            if unix:
                with contextlib.suppress(accounts.AccountError):
                    admin.delete(f"/users/{other}")
                    accounts.remove(unix, other)


def test_the_sdk_sends_a_fresh_key_per_call_and_reuses_a_given_one(
        server: InProcessServer) -> None:
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    with server.sdk() as client:
        a, b = client.submit(spec(name)), client.submit(spec(name))
        assert a.id != b.id
        key = str(uuid.uuid4())
        c, d = (client.submit(spec(name), idempotency_key=key) for _ in range(2))
        assert c.id == d.id
        with pytest.raises(ApiError) as refused:
            client.submit(spec(name, priority=3), idempotency_key=key)
        assert refused.value.status == 422 and HEADER in str(refused.value)
    with server.client(server.token) as h:
        assert count(h, name) == 3
