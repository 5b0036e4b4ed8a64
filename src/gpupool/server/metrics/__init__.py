"""Prometheus metrics of one server (``GET /metrics``, api/metrics_routes.py).

- ``loop_metrics``: the counters and histograms the loop updates as it works
  (:class:`LoopMetrics`, owned by the Controller; imports nothing of the API);
- ``books``: what the database says now (teams' allocation and quota, workloads by phase,
  idle notebooks), read at scrape time;
- ``collector``: the Collector that joins both at scrape time, and the app's own registry.
"""
