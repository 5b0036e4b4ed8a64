"""GET requests over a plain socket, for ``RawClient``: importing httpx (and httpcore, h11,
anyio, on its first request) and making an ``httpx.Client`` costs a command ~40-80 ms, and
even ``http.client`` ~10-25 ms (it imports ``email`` and ``ssl``): more than anything else
``gpupool ps`` still does.

Used only where it cannot answer otherwise than httpx: a plain ``http://host[:port][/path]``
URL (no TLS, no user info), no proxy in the environment (httpx would use it), no scripted
transport. Of the answers, only the plainest is read here: HTTP/1.x, a 2xx status, a
``Content-Length`` body without transfer or content encoding; its JSON is read as
``httpx.Response.json`` reads it, its ``X-Next-Cursor`` as httpx would. Any other answer,
and any failure to connect, send or read, makes ``Plain.get`` return ``RESEND``: the caller
sends the request again through httpx (a GET, so safe to repeat), whose answer or error is
the one reported, the same one-line ApiError as ever. A timeout is the exception: it is
reported at once as httpx's would be (``_http.timed_out``), not waited for twice.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from gpupool import __version__
from gpupool.sdk import _http

_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy"}
MAX_HEAD = 64 * 1024
"""The longest status line and headers read here (a longer head: RESEND)."""
RESEND: Any = object()
"""What ``Plain.get`` answers when httpx should send the request instead."""


class _Resend(Exception):
    """An answer or a failure that httpx should meet instead."""


def usable(url: str) -> bool:
    """Whether ``url`` (a server's base URL) may be asked here (see the module)."""
    if not sys.platform.startswith("linux"):  # elsewhere urllib (so httpx) reads system proxies
        return False
    if any(name.lower() in _PROXY_VARIABLES for name in os.environ):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "http" and bool(parts.hostname) and port != 0
            and parts.username is None and parts.password is None
            and not parts.query and not parts.fragment)


class Plain:
    """One kept-alive connection to the server of ``url`` (``usable``), sending GETs."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        self.url = url
        self.timeout = timeout
        self._prefix = parts.path.rstrip("/")
        self._address = (parts.hostname or "", parts.port or 80)
        self._headers = {"Host": parts.netloc, "Accept": "*/*", "Accept-Encoding": "identity",
                         "Connection": "keep-alive", "User-Agent": f"gpupool/{__version__}",
                         **headers}
        self._sock: socket.socket | None = None
        self._buffer = b""

    def get(self, call: _http.Call[Any]) -> Any:
        """``call``'s reading of a 2xx answer; RESEND when httpx should send it instead (any
        other answer or failure); the ApiError of a timeout."""
        query = urlencode(call.params, doseq=True, quote_via=quote) if call.params else ""
        target = self._prefix + "/" + call.path.lstrip("/") + (f"?{query}" if query else "")
        lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in
                                             {**self._headers, **call.headers}.items())]
        try:
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
            if self._sock is None:
                self._sock = socket.create_connection(self._address, timeout=self.timeout)
                self._buffer = b""
            self._sock.sendall(request)
            status, headers, body = self._answer()
        except TimeoutError:
            self.close()
            raise _http.timed_out(self.url, self.timeout) from None
        except (OSError, UnicodeError, ValueError, _Resend):
            self.close()
            return RESEND
        if headers.get("connection", "").lower() == "close":
            self.close()
        return _http.parse(call, status, lambda: json.loads(body), headers.get("x-next-cursor"))

    def _answer(self) -> tuple[int, dict[str, str], bytes]:
        """The status, headers (lower-case names) and body of the next answer, if it is one
        read here; else _Resend."""
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEAD:
                raise _Resend
            self._receive()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon or name.lower() in headers:
                raise _Resend  # not a header line, or one said twice
            headers[name.strip().lower()] = value.strip()
        if (version not in ("HTTP/1.1", "HTTP/1.0") or not 200 <= status < 300
                or "transfer-encoding" in headers
                or headers.get("content-encoding", "identity") != "identity"):
            raise _Resend
        length = int(headers["content-length"]) if "content-length" in headers else -1
        if length < 0:
            raise _Resend
        while len(self._buffer) < length:
            self._receive()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            headers["connection"] = "close"
        return status, headers, body

    def _receive(self) -> None:
        assert self._sock is not None
        data = self._sock.recv(256 * 1024)
        if not data:
            raise _Resend  # the server closed the connection
        self._buffer += data

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""
