"""``GET /metrics`` (Prometheus' text format): every metric agrees with the books (the
``/nodes``, ``/queues`` and ``/jobs`` answers, the events), and only admins may read it.

Tier: the middle one (inprocess_api: the real app and Controller, a scripted executor, a
fake clock, the loop stepped by hand). No timing asserts: the cycle histogram is only
counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from inprocess_api import BASE_URL, InProcessServer, submit

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def server(tmp_path: Path) -> InProcessServer:
    return InProcessServer(tmp_path, nodes=1, cards=2)


def scrape_as(server: InProcessServer, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return TestClient(server.app, base_url=BASE_URL, headers=headers).get("/metrics")


def scrape(server: InProcessServer) -> Samples:
    """Every sample of one scrape as the admin, by (name, labels)."""
    answer = scrape_as(server, server.token)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples}


def of(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def named(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def all_jobs(server: InProcessServer) -> list[dict[str, Any]]:
    got = server.admin.get("/jobs")
    assert got.status_code == 200, got.text
    return list(got.json())


def test_the_scrape_matches_the_books(server: InProcessServer) -> None:
    admin = server.admin
    assert admin.post("/teams", json={"name": "ml", "quota_gpus": 1}).status_code == 201
    ml = server.user("ada", "ml")
    first = submit(admin, gpus=0.5)
    server.step()
    samples = scrape(server)
    assert of(samples, "gpupool_gpu_allocated_ratio", node="n0", gpu="0", model="A100") == 0.5
    assert of(samples, "gpupool_gpu_allocated_ratio", node="n0", gpu="1", model="A100") == 0
    assert of(samples, "gpupool_submits_total") == 1

    made = admin.post("/jobs", json={"kind": "notebook", "gpus": 0.5})
    assert made.status_code == 201, made.text
    notebook = int(made.json()["id"])
    submit(ml, gpus=1)
    waiting = submit(admin, gpus=2)  # fits the pool, not what is free: pending
    server.step()
    samples = scrape(server)

    nodes = admin.get("/nodes").json()
    ratios = {(n["name"], str(g["index"]), g["model"]): g["allocated_milli"] / 1000
              for n in nodes for g in n["gpus"]}
    assert {tuple(dict(k)[x] for x in ("node", "gpu", "model")): v
            for k, v in named(samples, "gpupool_gpu_allocated_ratio").items()} == ratios
    assert sum(ratios.values()) == 2.0  # 0.5 + 0.5 + 1

    for queue in admin.get("/queues").json():
        assert of(samples, "gpupool_team_allocated_gpus", team=queue["team"]) == \
            queue["used_gpus"]
        assert of(samples, "gpupool_team_quota_gpus", team=queue["team"]) == queue["quota_gpus"]
    assert of(samples, "gpupool_team_allocated_gpus", team="ml") == 1
    assert of(samples, "gpupool_team_quota_gpus", team="ml") == 1

    jobs = all_jobs(server)
    books = Counter((j["phase"], j["queue"], j["kind"]) for j in jobs
                    if j["phase"] in ("pending", "starting", "running", "suspended"))
    assert {tuple(dict(k)[x] for x in ("phase", "queue", "kind")): v
            for k, v in named(samples, "gpupool_jobs").items()} == books
    assert books[("pending", "default", "job")] == 1
    assert books[("running", "default", "notebook")] == 1
    assert of(samples, "gpupool_submits_total") == 4

    started = [j for j in jobs if j["phase"] in ("starting", "running")]
    assert len(started) == 3 and str(waiting) not in {str(j["id"]) for j in started}
    waits = {dict(k)["queue"]: v for k, v in named(samples, "gpupool_job_wait_seconds_count")
             .items()}
    assert waits == {"default": 2, "ml": 1}
    assert of(samples, "gpupool_cycle_seconds_count") > 0
    assert of(samples, "gpupool_notebooks_idle", team="default") == 0
    assert named(samples, "gpupool_preemptions_total") == {}

    # The notebook watch finds it idle: the gauge counts it for its team.
    endpoint = {"host": "127.0.0.1", "port": 8888, "idle_since": server.clock.now}
    server.controller.store.notebook_seen(notebook, endpoint)
    samples = scrape(server)
    assert of(samples, "gpupool_notebooks_idle", team="default") == 1
    assert of(samples, "gpupool_notebooks_idle", team="ml") == 0

    # A job that ends leaves the counts; its GPU share is free again.
    server.executor.end(int(first))
    server.step(1)
    samples = scrape(server)
    assert ("succeeded", "default", "job") not in {
        tuple(dict(k)[x] for x in ("phase", "queue", "kind"))
        for k in named(samples, "gpupool_jobs")}
    assert of(samples, "gpupool_team_allocated_gpus", team="default") == \
        next(q["used_gpus"] for q in admin.get("/queues").json() if q["team"] == "default")


def test_a_preemption_is_counted_for_the_victims_queue(server: InProcessServer) -> None:
    admin = server.admin
    low = [submit(admin, gpus=1, priority=0) for _ in range(2)]
    server.step()
    high = submit(admin, gpus=1, priority=10)
    server.step(1)  # a victim is told to stop
    server.step(1)  # it ended (the scripted process honours SIGTERM): requeued; high starts
    samples = scrape(server)
    victims = [j for j in low if any("preempted to make room" in e["message"]
                                     for e in admin.get(f"/jobs/{j}").json()["events"])]
    assert len(victims) == 1
    assert of(samples, "gpupool_preemptions_total", queue="default") == 1
    assert admin.get(f"/jobs/{high}").json()["phase"] == "running"
    # Every bind observed one wait: the two low jobs, then the urgent one.
    assert of(samples, "gpupool_job_wait_seconds_count", queue="default") == 3


def test_only_an_admin_may_scrape(server: InProcessServer) -> None:
    assert scrape_as(server, None).status_code == 401
    assert scrape_as(server, "not-a-token").status_code == 401
    user = server.user("bob", "default")
    token = user.headers["Authorization"].removeprefix("Bearer ")
    refused = scrape_as(server, token)
    assert refused.status_code == 403
    assert "not an admin" in refused.json()["detail"]
    assert scrape_as(server, server.token).status_code == 200


def test_a_scrape_only_token_reads_metrics_and_nothing_else(server: InProcessServer) -> None:
    """``--scope metrics``: a non-admin scraper's token reads /metrics; the API refuses it
    (403, saying why), and so does the gateway (notebooks and services); the admin's token
    list shows its scope; an unknown scope is refused."""
    from gpupool.server.notebook_directory import NotebookDirectory

    server.user("prometheus", "default")
    made = server.admin.post("/tokens", json={"user": "prometheus", "scope": "metrics"})
    assert made.status_code == 201, made.text
    assert made.json()["scope"] == "metrics"
    scraper = made.json()["token"]
    assert scrape_as(server, scraper).status_code == 200
    api = server.client(scraper)
    for path in ("/jobs", "/queues", "/services", "/usage"):
        refused = api.get(path)
        assert refused.status_code == 403, (path, refused.text)
        assert "scoped to 'metrics'" in refused.json()["detail"]
    assert api.post("/jobs", json={"command": ["true"]}).status_code == 403
    gateway = NotebookDirectory(server.db, lambda nb, attempt: "", lambda nb, t: None,
                                lambda: None)
    assert gateway.authenticate(scraper) is None
    assert gateway.authenticate(server.token) is not None
    listed = {t["id"]: t["scope"] for t in server.admin.get("/tokens").json()}
    assert listed[made.json()["id"]] == "metrics"
    assert server.admin.post("/tokens", json={"user": "prometheus",
                                              "scope": "root"}).status_code == 422


def test_the_public_aggregate_view_names_no_team_queue_or_job(tmp_path: Path) -> None:
    """With ``metrics_public_aggregate``, no token gets the aggregate view (workloads by
    phase and kind, GPUs' allocation, totals); a token still gets the full view; a bad token
    is still refused. Without the setting, no token is 401 (test_only_an_admin_may_scrape)."""
    server = InProcessServer(tmp_path, nodes=1, cards=2, metrics_public_aggregate=True)
    admin = server.admin
    assert admin.post("/teams", json={"name": "ml", "quota_gpus": 1}).status_code == 201
    submit(server.user("ada", "ml"), gpus=0.5)
    submit(admin, gpus=1)
    server.step()
    public = scrape_as(server, None)
    assert public.status_code == 200, public.text
    samples = [s for family in text_string_to_metric_families(public.text)
               for s in family.samples]
    labels = {k for s in samples for k in s.labels}
    assert labels & {"team", "queue", "job", "user"} == set()
    assert "ml" not in public.text and "admin" not in public.text
    by_name = {(s.name, frozenset(s.labels.items())): s.value for s in samples}
    assert of(by_name, "gpupool_jobs", phase="running", kind="job") == 2
    assert of(by_name, "gpupool_team_allocated_gpus") == 1.5
    assert of(by_name, "gpupool_gpu_allocated_ratio", node="n0", gpu="0", model="A100") > 0
    full = scrape(server)
    assert of(full, "gpupool_team_allocated_gpus", team="ml") == 0.5
    assert scrape_as(server, "not-a-token").status_code == 401
