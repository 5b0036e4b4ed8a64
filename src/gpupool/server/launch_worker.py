"""Launching off the loop: the processes of placed jobs are started on a small thread pool,
so a slow node (a Ray node that takes seconds to answer) delays only its own jobs, never a
scheduling step. The loop collects what finished at the start of each step.

With ``threads=0`` launches run inline, in ``submit`` (tests that need each step to be
deterministic)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from gpupool.executors.base import Handle
from gpupool.server.active import Active

Launch = Callable[[Active], tuple[list[Handle], str | None]]


@dataclass
class Launched:
    """A finished launch: its handles and enforcement, or the exception it raised."""

    active: Active
    handles: list[Handle]
    enforcement: str | None
    error: BaseException | None


class LaunchWorker:
    def __init__(self, launch: Launch, wake: Callable[[], None], threads: int = 4) -> None:
        """``launch`` starts an attempt's processes (in a worker thread); ``wake`` is called
        when one finished, so the loop records it without waiting for its tick."""
        self._launch = launch
        self._wake = wake
        self._pool = ThreadPoolExecutor(threads, "gpupool-launch") if threads > 0 else None
        self._inflight: dict[int, tuple[Active, Future[tuple[list[Handle], str | None]]]] = {}
        self._inline: list[Launched] = []

    def submit(self, active: Active) -> None:
        """Start launching ``active`` (one launch per job at a time)."""
        if self._pool is None:
            try:
                handles, enforcement = self._launch(active)
            except BaseException as exc:  # recorded by the loop, like a thread's failure
                self._inline.append(Launched(active, [], None, exc))
            else:
                self._inline.append(Launched(active, handles, enforcement, None))
            return
        future = self._pool.submit(self._launch, active)
        self._inflight[active.live.id] = (active, future)
        future.add_done_callback(lambda _f: self._wake())

    def launching(self, job_id: int) -> bool:
        return job_id in self._inflight

    def finished(self) -> list[Launched]:
        """The launches that ended since the last call (each returned once)."""
        done, self._inline = self._inline, []
        for job_id, (active, future) in list(self._inflight.items()):
            if not future.done():
                continue
            del self._inflight[job_id]
            error = future.exception()
            if error is not None:
                done.append(Launched(active, [], None, error))
            else:
                handles, enforcement = future.result()
                done.append(Launched(active, handles, enforcement, None))
        return done

    def close(self) -> None:
        """Wait for the launches under way (their results are then collected by nobody:
        the server stops, and recovery adopts or abandons those processes)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
