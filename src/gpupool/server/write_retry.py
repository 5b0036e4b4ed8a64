"""Row writes the controller's loop could not make (the database was briefly unavailable),
kept by job and redone at the start of every step until they succeed.

Contract: ``write_or_retry`` runs a write at once; if it raises, the failure is logged (once,
with its traceback) and the write is kept, replacing any earlier one kept for that job.
``retry`` redoes every kept write: those that succeed are dropped (and logged), those that
fail again stay for the next call. ``job_id in retries`` says whether a job still has a write
outstanding (its row does not yet say where the job is).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("gpupool.controller")


class WriteRetries:
    """The outstanding row writes, one per job at most."""

    def __init__(self) -> None:
        self._unwritten: dict[int, Callable[[], None]] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._unwritten

    def write_or_retry(self, job_id: int, write: Callable[[], None]) -> None:
        """Run ``write``; if it fails, log once and keep it for :meth:`retry`."""
        try:
            write()
        except Exception:
            log.exception("job %s: could not write its row; retrying every step", job_id)
            self._unwritten[job_id] = write

    def retry(self) -> None:
        """Redo the writes that failed earlier; those failing again wait for the next call."""
        for job_id, write in list(self._unwritten.items()):
            try:
                write()
            except Exception:
                continue
            del self._unwritten[job_id]
            log.info("job %s: its row is written now", job_id)
