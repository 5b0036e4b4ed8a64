"""Reading attempts' logs as they grow, and the per-attempt log cap's setting.

Logs are appended to by the supervisor while they are read: every read here stops at a
UTF-8 character boundary (a bit short of the limit) so that a client following offsets
never sees a character cut in two, and :func:`read_text` also skips the tail of a character
cut before its offset.
"""

from __future__ import annotations

import os

from gpupool.executors.shim_log import utf8_cut, utf8_end, utf8_skip

LOG_CAP_ENV = "GPUPOOL_LOG_CAP_MIB"
DEFAULT_LOG_CAP_MIB = 100


def log_cap_from_env() -> int:
    """The per-attempt log cap in bytes from GPUPOOL_LOG_CAP_MIB (MiB, fractions allowed;
    0: no cap; default 100). ValueError naming the variable when it is not a number >= 0."""
    raw = os.environ.get(LOG_CAP_ENV, "").strip()
    if not raw:
        return DEFAULT_LOG_CAP_MIB << 20
    try:
        mib = float(raw)
    except ValueError:
        mib = -1.0
    if not mib >= 0 or mib == float("inf"):
        raise ValueError(f"{LOG_CAP_ENV}={raw!r} is not a size in MiB: give a number >= 0 "
                         f"(e.g. {DEFAULT_LOG_CAP_MIB}; 0 turns the log cap off)")
    return int(mib * (1 << 20))


def _read_window(path: str, offset: int, limit: int) -> tuple[bytes, int]:
    """Up to ``limit`` + 3 bytes of ``path`` from ``offset`` (3 to see where a character at
    the limit ends) and the file's size; (b"", size) past the end or without a file."""
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must be >= 0, got {offset} and {limit}")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset >= size:  # also past what seek accepts (e.g. 2**44)
                return b"", size
            f.seek(offset)
            return f.read(limit + 3), size
    except FileNotFoundError:
        return b"", 0


def _text_end(data: bytes, start: int, limit: int, whole: bool) -> int:
    """Where a chunk of ``data`` from ``start`` ends: at most ``limit`` bytes from 0, never
    inside a UTF-8 character (a bit less; a bit more only when one character is longer than
    the limit). Else ``data`` ends at the end of the file: a character still incomplete
    there is left for a later read, unless ``whole`` (nothing will complete it)."""
    if limit < len(data):
        end = utf8_cut(data, limit)
        if end <= start:  # one character longer than the limit: give it whole
            end = limit + utf8_skip(data[limit:limit + 3])
        return end
    return max(start, len(data) if whole else utf8_end(data))


def read_range(path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of a file from ``offset``; b"" at or past the end or if there is
    no such file yet. The bytes never end inside a UTF-8 character: a bit less is returned
    and the next read (at ``offset`` + its length) continues with that character. Bytes are
    returned from ``offset`` exactly (callers copy logs byte for byte): one inside a
    character starts with its end (:func:`read_text` skips it). Raises ValueError for a
    negative offset or limit."""
    data, _ = _read_window(path, offset, limit)
    return data[:_text_end(data, 0, limit, False)] if limit else b""


def read_text(path: str, offset: int, limit: int, final: bool = False) -> tuple[str, int, int]:
    """A log as text: (up to ``limit`` bytes decoded, the offset to read next, the file's
    size). The text starts at the first character that starts at or after ``offset`` and
    never ends inside one (so it holds no U+FFFD from a cut; the next offset continues).
    ``final``: nothing more will be written, so an incomplete character at the very end is
    returned (as U+FFFD) rather than waited for."""
    data, size = _read_window(path, offset, limit)
    if not data or not limit:
        return "", offset, size
    start = utf8_skip(data)
    end = _text_end(data, start, limit, final)
    return data[start:end].decode("utf-8", errors="replace"), offset + end, size
