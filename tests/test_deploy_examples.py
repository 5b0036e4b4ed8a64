"""deploy/: the Prometheus scrape example and the Grafana dashboard parse, and every metric
the dashboard's queries name is one the server exports (read from a real scrape of the
app's /metrics, middle tier), so a renamed metric breaks this test, not a user's panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from inprocess_api import BASE_URL, InProcessServer

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                            "_created"),
            "gauge": ("",)}


def exported(tmp_path: Path) -> set[str]:
    """The series names one scrape of a fresh server offers (with the suffixes each metric
    type gives its series)."""
    server = InProcessServer(tmp_path, nodes=1, cards=2)
    answer = TestClient(server.app, base_url=BASE_URL,
                        headers={"Authorization": f"Bearer {server.token}"}).get("/metrics")
    assert answer.status_code == 200, answer.text
    names = set()
    for family in text_string_to_metric_families(answer.text):
        names |= {family.name + s for s in SUFFIXES[family.type]}
    return names


def test_the_dashboard_names_only_metrics_the_server_exports(tmp_path: Path) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "gpupool-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    named = {m for e in exprs for m in re.findall(r"\bgpupool_[a-z_]+", e)}
    offered = exported(tmp_path)
    assert named - offered == set(), f"not exported: {sorted(named - offered)}"
    # every gauge the server exports is on the dashboard somewhere
    gauges = {"gpupool_gpu_allocated_ratio", "gpupool_team_allocated_gpus",
              "gpupool_team_quota_gpus", "gpupool_jobs", "gpupool_notebooks_idle",
              "gpupool_gpu_utilization_ratio", "gpupool_gpu_memory_used_bytes",
              "gpupool_job_gpu_utilization_ratio", "gpupool_job_gpu_memory_used_bytes",
              "gpupool_job_gpu_idle"}
    assert gauges <= named
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_scrape_example_asks_for_metrics_with_a_token_file() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8470"]
