"""An attempt's output on its way to the log, under a per-attempt cap. Standard library only:
the shim loads this file by path (see :mod:`gpupool.executors.shim`).

The command writes into a pipe; whoever reads it (the shim's recorder, or the shim once the
recorder is gone) hands the bytes to :class:`CappedLog`:

* the first half of the cap goes to the log as it comes (``logs -f`` sees it live);
* past that, the log gets one line saying so, and the output goes to a ring in RUN_DIR
  (``output.tail``: an 8-byte count of the bytes it was given, then the last
  ``cap - cap // 2`` of them, circular);
* when the attempt ends, :meth:`CappedLog.finish` appends one line saying how many bytes
  were dropped, then the ring's bytes, oldest first.

So an attempt's part of the log never exceeds the cap plus those two lines; the log is only
ever appended to (readers that follow offsets never see it shrink, and earlier attempts'
output is untouched); and the state lives in files (the log's size, the ring's count), so a
process taking over mid-attempt carries on where the other stopped. No cut splits a UTF-8
character. A cap of 0 means no cap.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import time
from collections.abc import Callable

TAIL_FILE = "output.tail"
READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
DRAIN_READS = 64
_COUNT = struct.Struct("<Q")
HEAD_NOTE = ("[gpupool: this attempt's output passed {head} bytes, half of its log cap of {cap} "
             "bytes (GPUPOOL_LOG_CAP_MIB); only its last {tail} bytes are kept from here on, "
             "added below when it ends]\n")
DROP_NOTE = ("[gpupool: {dropped} bytes of this attempt's output were dropped here to keep its "
             "log under {cap} bytes (GPUPOOL_LOG_CAP_MIB); its last {kept} bytes follow]\n")


def _continues(byte: int) -> bool:
    """``byte`` continues a multi-byte UTF-8 character (0b10xxxxxx)."""
    return 0x80 <= byte < 0xC0


def utf8_end(data: bytes) -> int:
    """``len(data)`` less the bytes of a UTF-8 character left incomplete at its end (0-3)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte < 0x80:
            return n
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return n - back if need > back else n
    return n  # continuation bytes only: not text, nothing to keep whole


def utf8_skip(data: bytes) -> int:
    """How many bytes (0-3) at the start of ``data`` finish a character begun before it."""
    skip = 0
    while skip < min(3, len(data)) and _continues(data[skip]):
        skip += 1
    return skip


def utf8_cut(data: bytes, at: int) -> int:
    """``at`` moved back (by at most 3) so that ``data[:at]`` ends on a character boundary."""
    cut = at
    while cut > max(0, at - 3) and cut < len(data) and _continues(data[cut]):
        cut -= 1
    return cut


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


class CappedLog:
    """The attempt's output into ``fd`` (the log, open for appending) under ``cap`` bytes;
    ``start``: the log's size when the attempt began."""

    def __init__(self, fd: int, run_dir: str, cap: int, start: int) -> None:
        self.fd = fd
        self.cap = max(0, cap)
        self.head = self.cap // 2
        self.tail = self.cap - self.head
        self.path = os.path.join(run_dir, TAIL_FILE)
        self.ring = -1
        self.total = 0
        """Bytes given to the ring so far (the ring keeps the last ``tail`` of them)."""
        with contextlib.suppress(OSError), open(self.path, "rb") as f:
            header = f.read(_COUNT.size)
            if len(header) == _COUNT.size:
                self.total = int(_COUNT.unpack(header)[0])
        try:
            self.written = max(0, os.fstat(fd).st_size - start)
        except OSError:
            self.written = 0
        self.last = b"\n"

    def write(self, data: bytes) -> None:
        """Pass on ``data``: to the log while the head has room, else to the ring."""
        if not self.cap:
            write_all(self.fd, data)
            return
        if self.total == 0 and self.written < self.head:
            room = self.head - self.written
            keep = len(data) if len(data) <= room else utf8_cut(data, room)
            if keep:
                write_all(self.fd, data[:keep])
                self.written += keep
                self.last = data[keep - 1:keep]
            data = data[keep:]
        if data:
            self._to_ring(data)

    def _to_ring(self, data: bytes) -> None:
        if self.total == 0:
            note = HEAD_NOTE.format(head=self.written, cap=self.cap, tail=self.tail)
            write_all(self.fd, ("" if self.last == b"\n" else "\n").encode() + note.encode())
        if self.ring < 0:
            self.ring = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        at, given = self.total, len(data)
        if given > self.tail:
            at, data = at + given - self.tail, data[given - self.tail:]
        pos = at % self.tail
        first = data[:self.tail - pos]
        _pwrite_all(self.ring, first, _COUNT.size + pos)
        if len(first) < len(data):
            _pwrite_all(self.ring, data[len(first):], _COUNT.size)
        self.total += given
        _pwrite_all(self.ring, _COUNT.pack(self.total), 0)

    def finish(self) -> None:
        """The attempt ended: append the line saying what was dropped, then the ring's bytes
        (oldest first); remove the ring. No-op when nothing went past the head."""
        if self.total == 0:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(_COUNT.size)
                ring = f.read(self.tail)
        except OSError:
            ring = b""
        pos = self.total % self.tail
        kept = ring if self.total <= self.tail else ring[pos:] + ring[:pos]
        kept = kept[utf8_skip(kept):]
        note = DROP_NOTE.format(dropped=self.total - len(kept), cap=self.cap, kept=len(kept))
        write_all(self.fd, note.encode() + kept)
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.total = 0

    def close(self) -> None:
        if self.ring >= 0:
            os.close(self.ring)
            self.ring = -1


def open_pipe() -> tuple[int, int]:
    """A pipe for the command's output (as large as the system allows, up to 1 MiB)."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_fd, write_fd


def pump(fd: int, log: CappedLog, done: Callable[[], bool], interval: float = 0.5,
         watch: int = -1) -> None:
    """Copy what arrives on ``fd`` into ``log`` until ``done()`` (asked whenever the pipe is
    closed or quiet, when ``watch`` (a pidfd) becomes readable, and at least every
    ``interval`` s), then what is already waiting."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if watch >= 0:
        poller.register(watch, select.POLLIN)
    check_at = time.monotonic() + interval
    pause = 0.005
    while True:
        events = dict(poller.poll(interval * 1000))
        chunk = os.read(fd, READ_SIZE) if events.get(fd) else None
        if watch >= 0 and events.get(watch):
            poller.unregister(watch)
            watch, check_at = -1, 0.0  # the process ended: ask done() now
        if chunk:
            log.write(chunk)
            if time.monotonic() < check_at:
                continue
        elif chunk is not None:  # end of file: every writer closed it
            poller.unregister(fd)
            while not done():
                time.sleep(pause)
                pause = min(pause * 2, interval)
            break
        if done():
            break
        check_at = time.monotonic() + interval
    drain(fd, log)


def drain(fd: int, log: CappedLog) -> None:
    """Copy into ``log`` what waits in ``fd`` now, without blocking (at most a few reads: a
    writer outside the group could keep it full)."""
    os.set_blocking(fd, False)
    try:
        for _ in range(DRAIN_READS):
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                return
            log.write(chunk)
    except (BlockingIOError, OSError):
        return
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)
