"""The local end of ``gpupool shell``: a Jupyter terminal (terminado's protocol over a
WebSocket) joined to this process's stdin and stdout.

The protocol: each message is a JSON array. The client sends ``["stdin", text]`` and
``["set_size", rows, cols]``; the server sends ``["stdout", text]``, and ``["disconnect",
...]`` once the shell in it has ended (other messages, e.g. ``["setup", {}]``, are ignored).

- ``Session`` reads the server's messages on a thread and writes their output; ``send``
  sends one message (False once the connection is gone);
- ``interactive``: stdin is a terminal. It is put in raw mode (every key, Ctrl-C included,
  goes to the remote shell) and restored on the way out, whatever happens; the window size
  is sent at the start and again on each SIGWINCH. Runs until the remote side ends.
- ``piped``: stdin is not a terminal (``echo 'make test' | gpupool shell nb``). Its text is
  sent as typed input until it ends; then a newline if its last line had none, and Ctrl-D
  (end of input: the shell exits once it has run what it read). Output is written until the
  remote side ends, or until ``drain`` seconds pass without any.

``connection`` is any object with ``send(str)``, ``close()`` and iteration over the
received messages, as ``websockets.sync.client.connect`` gives; no module here imports
``websockets``.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

READ_SIZE = 4096
TICK_S = 0.1
"""How often the loops look at the session's state while waiting for input."""
EOT = "\x04"
"""Ctrl-D: end of input, for the remote terminal."""


class Session:
    """A connected terminal: ``start`` the reader; ``done`` is set once the remote side
    ended (a ``disconnect`` message, ``ended`` True, or the connection closed)."""

    def __init__(self, connection: Any, write: Callable[[str], None]) -> None:
        self.connection = connection
        self.write = write
        self.done = threading.Event()
        self.ended = False
        self.last_output = time.monotonic()
        self._thread = threading.Thread(target=self._read, name="gpupool-shell", daemon=True)

    def start(self) -> Session:
        self._thread.start()
        return self

    def send(self, *message: object) -> bool:
        """Send ``message`` (a JSON array); False (and ``done`` set) when the connection is
        gone."""
        if self.done.is_set():
            return False
        try:
            self.connection.send(json.dumps(list(message)))
        except Exception:  # closed, reset, ...: websockets' exceptions are not imported here
            self.done.set()
            return False
        return True

    def close(self) -> None:
        """Close the connection and wait (briefly) for the reader to finish."""
        with contextlib.suppress(Exception):  # already gone
            self.connection.close()
        self._thread.join(timeout=5)

    def _read(self) -> None:
        try:
            for message in self.connection:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                try:
                    data = json.loads(message)
                except ValueError:
                    continue
                if not isinstance(data, list) or not data:
                    continue
                if data[0] == "stdout" and len(data) > 1 and isinstance(data[1], str):
                    self.last_output = time.monotonic()
                    self.write(data[1])
                elif data[0] == "disconnect":
                    self.ended = True
                    break
        except Exception:  # the connection closed or broke: the session is over either way
            pass
        finally:
            self.done.set()


def piped(session: Session, stdin: BinaryIO, drain: float) -> None:
    """Send ``stdin`` (not a terminal) as typed input, then Ctrl-D; return once the remote
    side ended or ``drain`` seconds passed without output after the input ended."""
    read = _reader(stdin)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    last = ""
    while not session.done.is_set():
        chunk = read()
        if chunk is None:
            continue
        text = decoder.decode(chunk, final=not chunk)
        if text:
            last = text
            session.send("stdin", text)
        if not chunk:
            break
    session.send("stdin", ("" if not last or last.endswith("\n") else "\n") + EOT)
    session.last_output = max(session.last_output, time.monotonic())
    while not session.done.wait(TICK_S):
        if time.monotonic() - session.last_output > drain:
            return


def _reader(stdin: BinaryIO) -> Callable[[], bytes | None]:
    """A read of ``stdin`` that returns what is there (b"": its end), or None after a tick
    with nothing to read (a file descriptor: select) so the caller can look around."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (tests): plain reads
        read1 = getattr(stdin, "read1", None)
        return (lambda: read1(READ_SIZE)) if read1 is not None else (
            lambda: stdin.read(READ_SIZE))

    def read() -> bytes | None:
        ready, _, _ = select.select([fd], [], [], TICK_S)
        return os.read(fd, READ_SIZE) if ready else None

    return read


def interactive(session: Session, fd: int) -> None:
    """Join the terminal ``fd`` (raw mode, restored on the way out) to the session until the
    remote side ends or ``fd`` reaches its end."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    resized = threading.Event()
    previous = signal.signal(signal.SIGWINCH, lambda *_: resized.set())
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        tty.setraw(fd, termios.TCSANOW)
        session.send("set_size", *size(fd))
        while not session.done.is_set():
            if resized.is_set():
                resized.clear()
                session.send("set_size", *size(fd))
            ready, _, _ = select.select([fd], [], [], TICK_S)
            if not ready:
                continue
            data = os.read(fd, READ_SIZE)
            if not data:
                break
            text = decoder.decode(data)
            if text:
                session.send("stdin", text)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)


def size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal ``fd``; (24, 80) when it has none."""
    try:
        found = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return found.lines or 24, found.columns or 80
