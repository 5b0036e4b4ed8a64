"""A small HTTP/1.1 client over one Unix socket, for the service proxy: kept-alive
connections pooled per socket path, messages framed and parsed by h11.

Why not httpx's transport (which the notebook proxy uses): under concurrency its pool
checks every pooled connection on every request (a ``select`` per connection to see whether
it expired), which made the gateway spend most of its time there at 32 clients
(bench/results/services.md has the before and after). Here a request takes the most recently
used idle connection, whose state asyncio already knows (the event loop reads a peer's close
as it happens), or opens one.

Contract:

- ``UdsPool(path).request(method, target, headers, body)`` sends one request and returns
  once the response's status and headers arrived, as an ``UpstreamResponse`` whose body is
  read with ``aiter_raw()`` (the bytes of the body, de-chunked) and which must be closed
  with ``aclose()`` (a connection goes back to the pool only when its response was read to
  the end and both sides may go on).
- ``body``: None (no body), bytes (sent with its ``Content-Length``) or an async iterator of
  bytes (sent as given by a ``Content-Length`` header, else chunked).
- Errors are httpx's exception types, so that callers treat both proxies alike:
  ``ConnectError`` (nothing was sent), ``ConnectTimeout`` (no connection in
  ``connect_s``), ``WriteError``, ``ReadError``, ``RemoteProtocolError`` (a malformed answer, or the
  replica closed without answering). Nothing is sent twice here: what may be retried is the
  caller's decision (``svc_proxy.forward``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

MAX_IDLE = 100
"""Idle connections kept per socket; more are closed when they come back."""
READ_SIZE = 65536
CONNECT_S = 5.0

Body = bytes | AsyncIterator[bytes] | None


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def alive(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof()
                    or self.reader.exception() is not None)

    def close(self) -> None:
        self.writer.close()

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (OSError, RuntimeError) as exc:
                raise httpx.WriteError(f"writing to the replica failed: {exc}") from exc

    async def next_event(self) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(f"the replica's answer is malformed: {exc}") \
                    from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.reader.read(READ_SIZE)
            except OSError as exc:
                raise httpx.ReadError(f"reading from the replica failed: {exc}") from exc
            self.h11.receive_data(data)  # b"": the end of the stream


class UpstreamResponse:
    """The status and headers of an answer; its body through ``aiter_raw``."""

    def __init__(self, pool: UdsPool, conn: _Conn, status: int,
                 headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.raw_headers = headers
        self._pool = pool
        self._conn: _Conn | None = conn
        self._done = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.raw_headers:
            if key.lower() == name:
                return value
        return None

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None or self._done:
            return
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("the replica closed the connection mid-body")

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._pool.release(conn)
        else:
            conn.close()


class UdsPool:
    """Kept-alive connections to one Unix socket. Use from one event loop."""

    def __init__(self, path: str, *, connect_s: float = CONNECT_S) -> None:
        self.path = path
        self._connect_s = connect_s
        self._idle: list[_Conn] = []

    async def _open(self) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=READ_SIZE), self._connect_s)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {self.path} in "
                                       f"{self._connect_s:g} s") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self.path}: {exc}") from exc
        return _Conn(reader, writer)

    def _take(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.alive():
                return conn
            conn.close()
        return None

    def release(self, conn: _Conn) -> None:
        if conn.alive() and len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    async def request(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: Body = None) -> UpstreamResponse:
        """Send the request; its response once the headers arrived (module docstring)."""
        framed = _framed(headers, body)
        conn = self._take() or await self._open()
        try:
            try:
                await conn.send(h11.Request(method=method, target=target, headers=framed))
            except h11.LocalProtocolError as exc:
                raise httpx.RemoteProtocolError(f"cannot send this request: {exc}") from exc
            if isinstance(body, bytes):
                if body:
                    await conn.send(h11.Data(data=body))
            elif body is not None:
                async for chunk in body:
                    if chunk:
                        await conn.send(h11.Data(data=chunk))
            await conn.send(h11.EndOfMessage())
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.Response):
                    return UpstreamResponse(self, conn, event.status_code, list(event.headers))
                if not isinstance(event, h11.InformationalResponse):
                    raise httpx.RemoteProtocolError("the replica closed the connection "
                                                    "without answering")
        except BaseException:
            conn.close()
            raise

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()


def _framed(headers: list[tuple[bytes, bytes]], body: Body) -> list[tuple[bytes, bytes]]:
    """``headers`` with the body's framing: a Host (h11 demands one), ``Content-Length`` of
    a bytes body, ``Transfer-Encoding: chunked`` for a stream without a length."""
    out = [(k, v) for k, v in headers if k != b"transfer-encoding"]
    if not any(k == b"host" for k, _ in out):
        out.insert(0, (b"host", b"localhost"))
    has_length = any(k == b"content-length" for k, _ in out)
    if isinstance(body, bytes):
        out = [(k, v) for k, v in out if k != b"content-length"]
        if body or has_length:
            out.append((b"content-length", str(len(body)).encode()))
    elif body is not None and not has_length:
        out.append((b"transfer-encoding", b"chunked"))
    return out
