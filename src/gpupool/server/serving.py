"""The HTTP server of ``gpupool up``: uvicorn, stopping gracefully on SIGINT (Ctrl-C), SIGTERM
or a stop request (``server/stopping.py``), and telling which it was.

Graceful means: the listening socket closes, requests in flight are answered, then the app's
lifespan ends (the background loop stops; running jobs are left to run). A second Ctrl-C
skips the waiting. Unlike ``uvicorn.run``, the signal is not raised again once the server
has stopped, so that ``gpupool up`` can say what happens to the jobs (``stopping.farewell``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Serving(uvicorn.Server):
    """``uvicorn.Server`` whose ``signal`` is the first stop signal received (None when it
    stopped on ``request_exit()`` or never started); ``on_signal(sig)`` is called once, at
    that first signal, from the signal handler (keep it short: print a line)."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[int], None]) -> None:
        super().__init__(config)
        self.signal: int | None = None
        self._on_signal = on_signal

    def request_exit(self) -> None:
        """Stop serving (thread-safe: the event loop checks the flag on its next tick)."""
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = sig
            self._on_signal(sig)
        super().handle_exit(sig, frame)


def signal_name(sig: int) -> str:
    """How a person calls the signal: ``Ctrl-C`` for SIGINT, else its name."""
    return "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
