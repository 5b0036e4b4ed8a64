"""The ``Directory`` seen from the event loop: blocking calls moved to worker threads, and
answers remembered for at most ``ttl`` seconds (1 s), so a revoked token or a disabled user
stops working within a second while a page load's dozens of requests cost one lookup.

Negative answers (None) are cached too. ``touch`` is passed on at most once per ``ttl`` per
notebook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

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
        hit, visitor = self._tokens.get(token)
        if not hit:
            asked = self._clock()
            visitor = await run_in_threadpool(self.directory.authenticate, token)
            self._tokens.put(token, visitor, asked)
        return visitor

    async def visitor(self, user: str) -> Visitor | None:
        hit, visitor = self._users.get(user)
        if not hit:
            asked = self._clock()
            visitor = await run_in_threadpool(self.directory.visitor, user)
            self._users.put(user, visitor, asked)
        return visitor

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
