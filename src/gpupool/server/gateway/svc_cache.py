"""The ``ServiceDirectory`` seen from the event loop: blocking calls moved to worker threads,
answers remembered for at most ``ttl`` seconds (1 s) by the injected clock, and one shared
wake-and-poll per service for the requests that wait for a first replica.

Contracts:

- ``service`` and ``key_valid`` answer from the cache when they can (a hit costs a dict
  lookup and touches no thread; concurrent misses share one lookup); negative answers
  (None, False) are cached too, so a revoked key or a removed service stops working within
  ``ttl`` seconds.
- ``fresh`` always asks the directory (and refreshes the cache with the answer).
- ``until_ready(name, timeout_s)``: wakes the service (``ServiceDirectory.wake``, at most
  every ``WAKE_EVERY_S`` while someone waits) and polls it every ``POLL_S`` seconds,
  bypassing the cache, until it lists a replica, disappears, or ``timeout_s`` (real time)
  passes; answers the last known target (None: no such service). However many requests
  wait for one service, there is one poller, and it stops when none waits any more.
- ``on_fresh`` (optional) sees every target the directory answers, once per lookup (the
  upstream client pool learns from it which sockets are still listed).
- ``report`` is passed straight on (it is non-blocking by the protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import anyio
from starlette.concurrency import run_in_threadpool

from gpupool.server.gateway.cache import _Memo
from gpupool.server.gateway.service_directory import Load, ServiceDirectory, ServiceTarget

log = logging.getLogger(__name__)

POLL_S = 0.2
WAKE_EVERY_S = 5.0


class _Poll:
    """One service's shared wait: how many requests wait, and what the poller found."""

    __slots__ = ("ready", "target", "task", "waiters")

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.target: ServiceTarget | None = None
        self.waiters = 0
        self.task: asyncio.Task[None] | None = None


class CachedServices:
    """Async, cached front of a ``ServiceDirectory``. Use from one event loop."""

    def __init__(self, services: ServiceDirectory, clock: Callable[[], float],
                 ttl: float = 1.0,
                 on_fresh: Callable[[ServiceTarget], None] | None = None) -> None:
        self.services = services
        self._clock = clock
        self._on_fresh = on_fresh
        self._targets: _Memo[str, ServiceTarget | None] = _Memo(ttl, clock)
        self._keys: _Memo[tuple[str, str], bool] = _Memo(ttl, clock)
        self._polls: dict[str, _Poll] = {}

    async def service(self, name: str) -> ServiceTarget | None:
        """The service named ``name`` as known at most ``ttl`` seconds ago."""
        return await self._targets.load(name, lambda: self.fresh(name))

    async def fresh(self, name: str) -> ServiceTarget | None:
        """The service named ``name`` as the directory says now (the cache is refreshed)."""
        asked = self._clock()
        target = await run_in_threadpool(self.services.service, name)
        self._targets.put(name, target, asked)
        if target is not None and self._on_fresh is not None:
            self._on_fresh(target)
        return target

    async def key_valid(self, name: str, key: str) -> bool:
        """Whether ``key`` is a live API key of service ``name`` (cached, negative too)."""
        return bool(await self._keys.load(
            (name, key), lambda: run_in_threadpool(self.services.key_valid, name, key)))

    def report(self, name: str, load: Load) -> None:
        self.services.report(name, load)

    async def until_ready(self, name: str, timeout_s: float) -> ServiceTarget | None:
        """Wait, at most ``timeout_s`` seconds, for service ``name`` to list a replica (see
        the module docstring). Cancelling the caller just stops its waiting."""
        poll = self._polls.get(name)
        if poll is None:
            poll = self._polls[name] = _Poll()
            poll.task = asyncio.get_running_loop().create_task(self._poll(name, poll))
        poll.waiters += 1
        try:
            with anyio.move_on_after(timeout_s):
                await poll.ready.wait()
        finally:
            poll.waiters -= 1
        if poll.ready.is_set():
            return poll.target
        hit, target = self._targets.get(name)
        return target if hit else poll.target

    async def _poll(self, name: str, poll: _Poll) -> None:
        loop = asyncio.get_running_loop()
        next_wake = 0.0
        try:
            while poll.waiters > 0:
                if loop.time() >= next_wake:
                    next_wake = loop.time() + WAKE_EVERY_S
                    try:
                        await run_in_threadpool(self.services.wake, name)
                    except Exception:
                        log.exception("waking service %r failed", name)
                try:
                    target = await self.fresh(name)
                except Exception:
                    log.exception("looking up service %r failed", name)
                else:
                    poll.target = target
                    if target is None or target.replicas:
                        poll.ready.set()
                        return
                await asyncio.sleep(POLL_S)
        finally:
            if self._polls.get(name) is poll:
                del self._polls[name]

    async def aclose(self) -> None:
        """Stop every poller (at gateway shutdown)."""
        polls, self._polls = list(self._polls.values()), {}
        for poll in polls:
            if poll.task is not None:
                poll.task.cancel()
        for poll in polls:
            if poll.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await poll.task
