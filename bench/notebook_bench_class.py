"""The class of the notebook benchmark (bench/notebook_bench.py): many notebooks at 1/8 GPU
submitted at once by as many users of one team; when each and all answer through the gateway,
where they were placed, and the memory the server, the notebooks and the machine use (2.)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from notebook_bench_measure import SHARE
from notebook_bench_procs import (
    cpu_s,
    descendants,
    memory_of,
    memory_used_mib,
    notebook_processes,
    process_table,
    status_kb,
)
from notebook_bench_server import Bench, answers
from notebook_bench_stats import summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpupool.executors import accounts
from notebook_client import base_of

CLASS_POLL_S = 0.1
CLASS_TIMEOUT_S = 420.0
TEAM = "class"
STUDENT = "nbb{:02d}"
"""Names of the class's users (their Unix accounts: gp-nbb01...): fixed, so that a run that
died before its clean-up has its accounts removed by the next."""


def make_students(bench: Bench, count: int, gpus: int) -> dict[str, str]:
    """``count`` users of team TEAM (quota: the whole pool), each with a token."""
    made = bench.admin.post("/teams", json={"name": TEAM, "quota_gpus": gpus})
    assert made.status_code == 201, made.text
    tokens = {}
    for i in range(1, count + 1):
        name = STUDENT.format(i)
        # a previous run killed before its clean-up may have left the account: remove it
        with contextlib.suppress(accounts.AccountError):
            accounts.remove(accounts.derived_name(name), name)
        bench.students.append(name)
        user = bench.admin.post("/users", json={"name": name, "team": TEAM})
        assert user.status_code == 201, user.text
        tokens[name] = str(bench.admin.post("/tokens", json={"user": name}).json()["token"])
    return tokens


def measure_class(bench: Bench, size: int, gpus: int) -> dict[str, Any]:
    """``size`` notebooks at 1/8 GPU, one per user, submitted at once (one thread each,
    released together); then every CLASS_POLL_S one listing of the jobs (for ``url``) and,
    for each notebook with a url not yet answering, one GET api/status through the gateway
    as its owner, until all answer."""
    progress = bench.progress
    task = progress.add_task(f"class: {size} users, creating accounts", total=size)
    tokens = make_students(bench, size, gpus)
    progress.update(task, description=f"class: {size} notebooks at 1/8 GPU, until all answer",
                    completed=0)
    home = bench.server.home
    before = {"server_rss_mib": status_kb(bench.pid, "VmRSS") / 1024,
              "machine_used_mib": memory_used_mib(), "server_cpu_s": cpu_s(bench.pid)}
    gate = threading.Barrier(size, timeout=120)
    t0 = 0.0  # set just before the threads start

    def submit(name: str) -> tuple[str, str, float, float]:
        with httpx.Client(base_url=bench.server.url + "/api/v1", timeout=120, trust_env=False,
                          headers={"Authorization": f"Bearer {tokens[name]}"}) as mine:
            gate.wait()
            sent = time.perf_counter() - t0
            made = mine.post("/jobs", json={"kind": "notebook", "gpus": SHARE, "name": name})
            assert made.status_code == 201, made.text
            return name, str(made.json()["id"]), sent, time.perf_counter() - t0

    with ThreadPoolExecutor(size) as pool:
        t0 = time.perf_counter()
        submitted = list(pool.map(submit, tokens))
    all_posted = time.perf_counter() - t0
    sent_at = {job_id: sent for _, job_id, sent, _ in submitted}
    answered_at = {job_id: answered for _, job_id, _, answered in submitted}
    owner = {job_id: name for name, job_id, _, _ in submitted}
    url_at: dict[str, float] = {}
    ready_at: dict[str, float] = {}
    urls: dict[str, str] = {}
    peak_server_rss = 0.0
    views: dict[str, dict[str, Any]] = {}
    while len(ready_at) < size:
        if time.perf_counter() - t0 > CLASS_TIMEOUT_S:
            raise RuntimeError(f"only {len(ready_at)} of {size} notebooks answered within "
                               f"{CLASS_TIMEOUT_S} s")
        listed = bench.admin.get("/jobs", params={"kind": "notebook"}).json()
        views = {v["id"]: v for v in listed if v["id"] in owner}
        for job_id, view in views.items():
            if view["phase"] in ("failed", "cancelled", "succeeded"):
                raise RuntimeError(f"notebook {job_id} ended: {view}")
            if view.get("url") and job_id not in url_at:
                url_at[job_id] = time.perf_counter() - t0
                urls[job_id] = base_of(view["url"]) + "api/status"
        for job_id, status in urls.items():
            if job_id not in ready_at and answers(status, tokens[owner[job_id]]):
                ready_at[job_id] = time.perf_counter() - t0
                progress.advance(task)
        peak_server_rss = max(peak_server_rss, status_kb(bench.pid, "VmRSS") / 1024)
        time.sleep(CLASS_POLL_S)
    all_ready = max(ready_at.values())
    time.sleep(2)  # let the last starts settle before the memory is read
    procs = notebook_processes(home)
    after = {"server_rss_mib": status_kb(bench.pid, "VmRSS") / 1024,
             "server_hwm_mib": status_kb(bench.pid, "VmHWM") / 1024,
             "server_peak_sampled_mib": peak_server_rss,
             "machine_used_mib": memory_used_mib(), "server_cpu_s": cpu_s(bench.pid)}
    table = process_table()
    server_children = descendants({bench.pid}, table) - {bench.pid} - set(procs["trees"])
    memory = {"jupyter": memory_of(procs["jupyter"]), "trees": memory_of(procs["trees"]),
              "kernels": memory_of(procs["kernels"]),
              "server_children": memory_of(sorted(server_children))}
    listed = {v["id"]: v for v in bench.admin.get("/jobs", params={"kind": "notebook"}).json()}
    placements = [listed[j]["placement"] for j in owner]
    per_gpu = Counter(g for p in placements for g in p["gpus"])
    progress.update(task, description=f"class: {size} notebooks ready; cancelling them")
    bench.cancel_and_wait(list(owner), timeout=120)
    per_nb = [ready_at[j] - sent_at[j] for j in owner]
    return {
        "size": size, "users": size, "team": TEAM, "gpus": gpus, "share": SHARE,
        "all_posted_s": all_posted, "all_ready_s": all_ready,
        "ready_from_own_post_s": summary(per_nb),
        "post_answered_s": summary([answered_at[j] - sent_at[j] for j in owner]),
        "url_from_own_post_s": summary([url_at[j] - sent_at[j] for j in owner]),
        "ready_from_start_s": summary(list(ready_at.values())),
        "per_notebook": [{"id": j, "user": owner[j], "sent_s": sent_at[j],
                          "answered_s": answered_at[j], "url_s": url_at[j],
                          "ready_s": ready_at[j], "placement": listed[j]["placement"],
                          "isolation": listed[j].get("isolation")} for j in owner],
        "per_gpu": {str(g): n for g, n in sorted(per_gpu.items())},
        "share_milli": sorted({p["gpu_milli"] for p in placements}),
        "before": before, "after": after, "memory": memory,
        "server_cpu_s": after["server_cpu_s"] - before["server_cpu_s"],
    }
