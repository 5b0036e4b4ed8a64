"""The ``Directory`` seen from the event loop: blocking calls moved to worker threads, and
answers remembered for at most ``ttl`` seconds (1 s), so a revoked token or a disabled user
stops working within a second while a page load's dozens of requests cost one lookup.

Negative answers (None) are cached too. Requests that miss the same key together share one
lookup (``_Memo.load``: without it, each expiry under load sent every request in flight to
the database). ``touch`` is passed on at most once per ``ttl`` per notebook.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

from starlette.concurrency import run_in_threadpool

from gpupool.server.gateway.directory import Directory, Target, Visitor

K = TypeVar("K")
V = TypeVar("V")

MAX_ENTRIES = 10_000


class _Memo(Generic[K, V]):
    """Answers by key, each kept ``ttl`` seconds by ``clock``."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._pending: dict[K, asyncio.Future[V]] = {}

    def get(self, key: K) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] >= self._ttl:
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V, at: float) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            now = self._clock()
            self._entries = {k: e for k, e in self._entries.items() if now - e[0] < self._ttl}
        self._entries[key] = (at, value)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    async def load(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        """The remembered answer for ``key``, else ``fetch()``'s, remembered from when it was
        asked. One fetch per key at a time: callers that miss meanwhile await the same one
        (a caller cancelled leaves it running for the others)."""
        hit, value = self.get(key)
        if hit:
            return cast(V, value)
        pending = self._pending.get(key)
        if pending is None:
            asked = self._clock()
            pending = self._pending[key] = asyncio.ensure_future(fetch())
            pending.add_done_callback(lambda done: self._settle(key, done, asked))
        return await asyncio.shield(pending)

    def _settle(self, key: K, done: asyncio.Future[V], asked: float) -> None:
        self._pending.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self.put(key, done.result(), asked)


class CachedDirectory:
    """Async, cached front of a ``Directory``. Use from one event loop."""

    def __init__(self, directory: Directory, clock: Callable[[], float],
                 ttl: float = 1.0) -> None:
        self.directory = directory
        self._clock = clock
        self._ttl = ttl
        self._tokens: _Memo[str, Visitor | None] = _Memo(ttl, clock)
        self._users: _Memo[str, Visitor | None] = _Memo(ttl, clock)
        self._notebooks: _Memo[int, Target | None] = _Memo(ttl, clock)
        self._touched: dict[int, float] = {}

    async def authenticate(self, token: str) -> Visitor | None:
        return await self._tokens.load(
            token, lambda: run_in_threadpool(self.directory.authenticate, token))

    async def visitor(self, user: str) -> Visitor | None:
        return await self._users.load(
            user, lambda: run_in_threadpool(self.directory.visitor, user))

    async def notebook(self, nb_id: int) -> Target | None:
        hit, target = self._notebooks.get(nb_id)
        if not hit:
            asked = self._clock()
            target = await run_in_threadpool(self.directory.notebook, nb_id)
            self._notebooks.put(nb_id, target, asked)
        return target

    async def resume(self, nb_id: int, visitor: Visitor) -> None:
        """Resume the notebook and forget what was known of it (its state is changing)."""
        await run_in_threadpool(self.directory.resume, nb_id, visitor)
        self._notebooks.drop(nb_id)

    def touch(self, nb_id: int) -> None:
        now = self._clock()
        last = self._touched.get(nb_id)
        if last is not None and now - last < self._ttl:
            return
        if len(self._touched) >= MAX_ENTRIES:
            self._touched.clear()
        self._touched[nb_id] = now
        self.directory.touch(nb_id, now)
