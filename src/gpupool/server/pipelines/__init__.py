"""Pipelines: DAG workflows of steps (docs/design/pipelines.md).

Pure parts (no I/O): ``dag`` (validation, order, templates) and ``cron`` (firings and the
concurrency policy). The rest drives runs: ``engine`` (the background thread: schedules,
dispatcher, reconciler), ``reconciler``, the step executors and the use cases in
``service``.
"""
