"""GET requests through the standard library's ``http.client``, for ``RawClient``: importing
httpx (and httpcore, h11, anyio, on its first request) and making an ``httpx.Client`` costs
a command ~40-80 ms, more than anything else ``gpupool ps`` still does; ``http.client``
costs ~10-25 ms.

Used only where it cannot answer otherwise than httpx: a plain ``http://host[:port][/path]``
URL (no TLS, no user info), no proxy in the environment (httpx would use it), no scripted
transport. Only a 2xx answer without content encoding is read here (``http.client`` reads
HTTP/1.0 and 1.1, sized, chunked or closing bodies); its JSON is read as
``httpx.Response.json`` reads it, its ``X-Next-Cursor`` as httpx would. Any other answer,
and any failure to connect, send or read, makes ``Plain.get`` return ``RESEND``: the caller
sends the request again through httpx (a GET, so safe to repeat), whose answer or error is
the one reported, the same one-line ApiError as ever. A timeout is the exception: it is
reported at once as httpx's would be (``_http.timed_out``), not waited for twice.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from gpupool import __version__
from gpupool.sdk import _http

_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy"}
RESEND: Any = object()
"""What ``Plain.get`` answers when httpx should send the request instead."""


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
        self._host, self._port = parts.hostname or "", parts.port or 80
        self._headers = {"Host": parts.netloc, "Accept": "*/*", "Accept-Encoding": "identity",
                         "User-Agent": f"gpupool/{__version__}", **headers}
        self._connection: http.client.HTTPConnection | None = None

    def get(self, call: _http.Call[Any]) -> Any:
        """``call``'s reading of a 2xx answer; RESEND when httpx should send it instead (any
        other answer or failure); the ApiError of a timeout."""
        query = urlencode(call.params, doseq=True, quote_via=quote) if call.params else ""
        target = self._prefix + "/" + call.path.lstrip("/") + (f"?{query}" if query else "")
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self._host, self._port,
                                                          timeout=self.timeout)
        try:
            self._connection.request("GET", target, headers={**self._headers, **call.headers})
            response = self._connection.getresponse()
            body = response.read()
        except TimeoutError:
            self.close()
            raise _http.timed_out(self.url, self.timeout) from None
        except (OSError, http.client.HTTPException, UnicodeError, ValueError):
            self.close()
            return RESEND
        if response.will_close:
            self.close()
        if (not 200 <= response.status < 300
                or response.getheader("Content-Encoding", "identity").lower() != "identity"):
            return RESEND
        return _http.parse(call, response.status, lambda: json.loads(body),
                           response.getheader(_http.NEXT_CURSOR))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
