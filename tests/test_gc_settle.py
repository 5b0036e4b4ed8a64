"""Settling the heap (server/gc_settle.py): survivors go to the permanent generation, which
automatic collections skip, and cyclic garbage among them is still freed at the next
settling (memory stays bounded)."""

from __future__ import annotations

import gc
import threading
import weakref

from gpupool.server.gc_settle import Settler, settle


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_settled_cycles_are_freed_at_the_next_settling_not_before() -> None:
    try:
        kept = Node()
        ref = weakref.ref(kept)
        settle()
        assert gc.get_freeze_count() > 0
        del kept  # garbage now, but frozen: an ordinary full collection does not see it
        gc.collect()
        assert ref() is not None
        settle()
        assert ref() is None
    finally:
        gc.unfreeze()


def test_the_settler_settles_on_its_thread_and_unfreezes_when_stopped() -> None:
    settler = Settler(interval_s=3600, first_after_s=0.01)
    try:
        settler.start()
        for _ in range(1000):  # up to 10 s for its first settling
            if gc.get_freeze_count() > 0:
                break
            threading.Event().wait(0.01)
        assert gc.get_freeze_count() > 0
    finally:
        settler.stop()
    assert gc.get_freeze_count() == 0
