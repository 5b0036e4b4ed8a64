"""``RawClient``: the job listing as the JSON objects the server sends, for a tool that only
prints them and must start fast (``gpupool ps``).

It imports neither ``gpupool.schemas`` nor pydantic (~40 ms and more of start-up), and
validates nothing: each row is a ``dict`` shaped as ``JobView`` by a server of the same
version. ``Client.jobs`` gives the same rows as validated models. It finds the server,
checks certificates, pages and fails exactly as ``Client`` does (same arguments, same
ApiError and ConfigError), except that ``phase`` and ``order`` are sent as given: a value the
server does not know is its ApiError(422), not a local ValueError.

A plain ``http://`` server is asked through the standard library's ``http.client``
(``_plain``: no httpx to import, ~40-80 ms); any answer but a 2xx, and any failure, again
through httpx, which then says what went wrong as ``Client`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gpupool.sdk import _http, _paging, _plain
from gpupool.sdk._base import DEFAULT_TIMEOUT, _Blocking
from gpupool.sdk.config import ServerConfig

if TYPE_CHECKING:
    import httpx

    from gpupool.sdk._tls import Verify

T = TypeVar("T")
Row = dict[str, Any]
"""One job as the server's JSON object (the fields of ``JobView``)."""


def job_query(phase: str | Sequence[str] | None, queue: str | None, name: str | None,
              order: str) -> dict[str, str | list[str]]:
    """The query of a job listing, as ``_wire.job_filters`` builds it from the same values."""
    params: dict[str, str | list[str]] = {"order": str(order)}
    if phase is not None:
        params["phase"] = [phase] if isinstance(phase, str) else [str(p) for p in phase]
    if queue is not None:
        params["queue"] = queue
    if name is not None:
        params["name"] = name
    return params


class RawClient(_Blocking):
    """A blocking client of the job listing that answers unvalidated JSON objects; made and
    closed as ``Client`` (see the module for what differs)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        config: ServerConfig | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        verify: Verify = None,
    ) -> None:
        super().__init__(url, token, config, timeout, verify)
        self._transport = transport
        self._http: httpx.Client | None = None
        self._plain: _plain.Plain | None = None
        if transport is None and _plain.usable(self.config.url):
            self._plain = _plain.Plain(self.config.url, self._headers, timeout)
        else:
            self._client()  # as Client: made (and a bad setting refused) now

    def _client(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(
                base_url=self.config.url, headers=self._headers, timeout=self.timeout,
                transport=self._transport, verify=self._verify,
            )
        return self._http

    def close(self) -> None:
        if self._plain is not None:
            self._plain.close()
        if self._http is not None:
            self._http.close()

    def _do(self, call: _http.Call[T]) -> T:
        if self._plain is not None and call.method == "GET":
            answer = self._plain.get(call)
            if answer is not _plain.RESEND:
                result: T = answer
                return result
        import httpx

        http = self._client()
        try:
            response = http.send(_http.request(http, call))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return _http.read(call, response)

    def jobs(
        self,
        phase: str | Sequence[str] | None = None,
        queue: str | None = None,
        name: str | None = None,
        *,
        order: str = "newest",
        limit: int | None = None,
    ) -> list[Row]:
        """As ``Client.jobs``: every match, following the server's pages, or the first
        ``limit``; each a dict."""
        query = job_query(phase, queue, name, order)
        return _paging.collect_items(self._do, f"{_http.API}/jobs", _paging.json_objects,
                                     query, limit)
