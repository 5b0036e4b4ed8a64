"""Listings come in pages and say when more exist (issue 14, item 10: lists were cut at 1,000
rows without saying so, and the Queues page showed the newest 1,000, hiding the head of the
line). On both stores: the API's cursor pages (newest first and in the scheduler's order),
the SDK following them, the CLI's --limit with its notice, and the console's Jobs and Queues
pages in Chromium.

Tiers: each store's pool is made and asked on the middle tier (inprocess_api: the real app,
Controller and database in this process, the loop stepped by hand), the API and SDK tests
there. The CLI (a subprocess) and the console (Chromium) need a real `gpupool up`: it is
started on the same store and home once the first of those tests asks for it (``real``), so
the 250 jobs are submitted once; the tests that step the in-process loop come before it in
this file, and none touches the in-process server once the real one runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inprocess_api import InProcessServer
from middle_tier import backend_store
from server_harness import Server, backend_params, kill_leftover_jobs
from test_console import browser, expect, goto, needs_browser, page, sign_in

__all__ = ["browser", "page"]  # fixtures shared with test_console

JOBS = 250


@dataclass
class Pool:
    """One store's pool: ``api`` the in-process server, ``token`` the token of a user whose
    team has no quota (its jobs wait), ``ids`` the ids of the JOBS jobs that user queued,
    with priorities 0, 1, 2 in turn."""

    _api: InProcessServer
    token: str
    ids: list[int]
    database_url: str
    """``--database-url`` of the real server (empty: the SQLite file in the home)."""
    _real: Server | None = None

    @property
    def api(self) -> InProcessServer:
        assert self._real is None, "the real server runs on this store: order the tests so"
        return self._api

    def real(self) -> Server:
        """A real `gpupool up` on this pool's store and home (started on first use; the
        in-process server is not used after that)."""
        if self._real is None:
            server = Server(self._api.settings.home, self.database_url, "1xA100-80GB")
            self._real = server
            server.start()
        return self._real


@pytest.fixture(scope="module", params=backend_params())
def pool(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    backend = request.param
    home = tmp_path_factory.mktemp(f"pages-{backend}")
    for db in backend_store(backend, home):
        api = InProcessServer(home / "home", nodes=1, cards=1, db=db)
        admin = api.admin
        admin.post("/teams", json={"name": "parked", "quota_gpus": 0})
        admin.post("/teams", json={"name": "other", "quota_gpus": 0})
        for name, team in (("pager", "parked"), ("stranger", "other")):
            assert admin.post("/users", json={"name": name, "team": team,
                                              "unix_user": "root"}).status_code == 201
        token = admin.post("/tokens", json={"user": "pager"}).json()["token"]
        ids = []
        with api.client(token) as c:
            for i in range(JOBS):
                r = c.post("/jobs", json={"command": ["true"], "gpus": 1, "name": f"j{i}",
                                          "priority": i % 3})
                assert r.status_code == 201, r.text
                ids.append(int(r.json()["id"]))
        made = Pool(api, token, ids, "" if db is None else db.url)
        try:
            yield made
        finally:
            if made._real is not None:
                made._real.stop()
                made._real.wait_exited()  # its connections are gone before the store is
                kill_leftover_jobs(made._real.home)
                shutil.rmtree(made._real.work_dir, ignore_errors=True)


def pages(client: Any, query: str) -> list[tuple[list[dict[str, Any]], Any]]:
    """Every page of ``GET /jobs?query``, following the Link header."""
    found = []
    url = f"/jobs?{query}"
    while True:
        r = client.get(url)
        assert r.status_code == 200, r.text
        found.append((r.json(), r.headers))
        link = r.headers.get("link")
        if link is None:
            assert "x-next-cursor" not in r.headers
            return found
        assert link.endswith('>; rel="next"') and "cursor=" in link
        url = link[1:link.index(">")]


def test_pages_newest_first_say_when_more_exist_and_cover_every_job_once(
        pool: Pool) -> None:
    with pool.api.client(pool.token) as c:
        got = pages(c, "limit=100&phase=pending")
    assert [len(rows) for rows, _ in got] == [100, 100, 50]
    listed = [int(j["id"]) for rows, _ in got for j in rows]
    assert listed == sorted(pool.ids, reverse=True)  # each once, newest first, none skipped
    assert all(h.get("x-next-cursor") for _, h in got[:-1])


def test_queue_order_is_the_schedulers_head_of_the_line_first(
        pool: Pool) -> None:
    ids = pool.ids
    with pool.api.client(pool.token) as c:
        got = pages(c, "limit=70&phase=pending&queue=parked&order=queue")
    listed = [int(j["id"]) for rows, _ in got for j in rows]
    expected = sorted(ids, key=lambda i: (-(ids.index(i) % 3), i))  # priority, then age
    assert listed == expected
    assert got[0][0][0]["priority"] == 2 and int(got[0][0][0]["id"]) == ids[2]


def test_a_row_added_between_pages_neither_repeats_nor_hides_a_row(
        pool: Pool) -> None:
    ids = pool.ids
    with pool.api.client(pool.token) as c:
        first = c.get("/jobs", params={"limit": 100, "phase": "pending"})
        extra = c.post("/jobs", json={"command": ["true"], "gpus": 1}).json()["id"]
        try:
            rest = pages(c, f"limit=100&phase=pending&cursor={first.headers['x-next-cursor']}")
        finally:
            c.post(f"/jobs/{extra}/cancel")
            pool.api.step()  # the loop carries the cancel out
            assert c.get(f"/jobs/{extra}").json()["phase"] == "cancelled"
    listed = [int(j["id"]) for j in first.json()] + [int(j["id"]) for rows, _ in rest
                                                       for j in rows]
    assert listed == sorted(ids, reverse=True)


def test_several_phases_filter_in_one_request(pool: Pool) -> None:
    with pool.api.client(pool.token) as c:
        r = c.get("/jobs", params=[("phase", "running"), ("phase", "pending"), ("limit", "5")])
        assert r.status_code == 200 and len(r.json()) == 5
        assert {j["phase"] for j in r.json()} == {"pending"}
        assert "phase=running&phase=pending" in r.headers["link"]  # filters carried over
        assert c.get("/jobs", params={"phase": "succeeded"}).json() == []


def test_a_bad_or_foreign_cursor_is_refused_naming_it_and_grants_nothing(
        pool: Pool) -> None:
    with pool.api.client(pool.token) as c:
        newest = c.get("/jobs", params={"limit": 10}).headers["x-next-cursor"]
        for bad in ("garbage", "eyJ4Ijox", newest + "A"):
            r = c.get("/jobs", params={"cursor": bad})
            assert r.status_code == 422 and "cursor" in r.json()["detail"], (bad, r.text)
        r = c.get("/jobs", params={"cursor": newest, "order": "queue"})  # made for another order
        assert r.status_code == 422 and "cursor" in r.json()["detail"]
    stranger = pool.api.admin.post("/tokens", json={"user": "stranger"}).json()["token"]
    with pool.api.client(stranger) as c:  # another team: the cursor shows it nothing
        r = c.get("/jobs", params={"cursor": newest})
        assert r.status_code == 200 and r.json() == [] and "link" not in r.headers


def test_audit_log_pages_too(pool: Pool) -> None:
    with pool.api.client(pool.api.token) as admin:
        first = admin.get("/audit", params={"limit": 2})
        assert first.status_code == 200 and len(first.json()) == 2
        second = admin.get("/audit", params={"limit": 2,
                                             "cursor": first.headers["x-next-cursor"]})
        ids = [e["id"] for e in first.json() + second.json()]
        assert len(set(ids)) == 4 and ids == sorted(ids, reverse=True)


def test_the_sdk_follows_pages_and_stops_at_its_limit(
        pool: Pool) -> None:
    ids = pool.ids
    with pool.api.sdk(pool.token) as gp:
        every = gp.jobs(phase="pending")
        assert [int(j.id) for j in every] == sorted(ids, reverse=True)
        assert len(gp.jobs(limit=3)) == 3
        head = gp.jobs(["pending", "running"], queue="parked", order="queue", limit=1)
        assert int(head[0].id) == ids[2]
        assert gp.job("j7").name == "j7"  # by name: the newest of that name, one request


def test_ids_past_the_columns_and_log_offsets_past_any_file_answer_without_a_500(
        pool: Pool) -> None:
    """Found by the long fuzz run (bench/results/api_fuzz.md): on PostgreSQL an id of 2**31
    overflowed the integer column (500); a log offset of 2**44 broke the file seek (500)."""
    with pool.api.client(pool.token) as c:
        for path in ("/jobs/2147483648", "/jobs/2147483648/logs", "/pipeline-runs/2147483648"):
            r = c.get(path)
            assert r.status_code == 422 and "2147483647" in r.json()["detail"], (path, r.text)
        assert c.get("/jobs/2147483647").status_code == 404
    admin = pool.api.admin  # a job that ran and wrote a log
    ran = admin.post("/jobs", json={"command": ["echo", "hi"]}).json()["id"]
    pool.api.step()
    pool.api.output(ran, "hi\n")  # what echo writes
    pool.api.executor.end(ran)
    pool.api.step(1)
    assert admin.get(f"/jobs/{ran}").json()["phase"] == "succeeded"
    r = admin.get(f"/jobs/{ran}/logs", params={"offset": 2**44})
    assert r.status_code == 200 and r.json()["data"] == "" and r.json()["size"] == 3, r.text


# ---- a real server on the same store: the CLI and the console ------------------------------


def gpupool(server: Server, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = server.env | {"GPUPOOL_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_ps_shows_its_limit_and_says_when_more_exist(
        pool: Pool) -> None:
    server, token, ids = pool.real(), pool.token, pool.ids
    shown = gpupool(server, token, "ps", "--limit", "10", "--json")
    assert shown.returncode == 0, shown.stderr
    import json

    assert [int(j["id"]) for j in json.loads(shown.stdout)] == sorted(ids, reverse=True)[:10]
    assert "showing the first 10 jobs: more exist" in shown.stderr
    every = gpupool(server, token, "ps", "-n", "0", "--json", "--order", "queue")
    assert len(json.loads(every.stdout)) == JOBS and "more exist" not in every.stderr
    wrong = gpupool(server, token, "ps", "--order", "oldest")
    assert wrong.returncode == 2 and "--order 'oldest': choose one of newest, queue" in wrong.stderr


@needs_browser
@pytest.mark.parametrize("pool", ["sqlite"], indirect=True)  # the same API on both stores
def test_console_jobs_page_says_older_jobs_exist_and_queues_show_the_head_of_the_line(
        pool: Pool, page: Any, tmp_path: Path) -> None:
    server, token, ids = pool.real(), pool.token, pool.ids
    sign_in(page, server, token)
    goto(page, server, "/jobs?phase=pending")
    expect(page.get_by_text("200 jobs shown — the newest 200; older jobs exist")).to_be_visible()
    page.get_by_test_id("jobs-more").click()
    expect(page.get_by_text("250 jobs shown")).to_be_visible()
    expect(page.get_by_test_id("jobs-more")).to_be_hidden()
    goto(page, server, "/queues")
    card = page.get_by_test_id("queue-parked")
    expect(card.get_by_test_id("queue-more-parked")).to_contain_text(
        f"The first 50 of {JOBS} pending jobs, in the order the scheduler takes them")
    first_row = card.locator("tbody tr").first
    expect(first_row).to_have_attribute("data-job", str(ids[2]))  # priority 2, oldest


