"""What the clients (blocking, asyncio, raw) share: configuration, TLS, deadlines. Imports no
model (``gpupool.sdk.raw`` starts without pydantic)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Self

from gpupool.sdk import _http
from gpupool.sdk.config import ServerConfig, discover
from gpupool.sdk.errors import ApiError

# For signatures only: the raw client imports no model, and httpx and ssl only when it uses
# them.
if TYPE_CHECKING:
    import ssl

    import httpx

    from gpupool.schemas.jobs import JobView
    from gpupool.sdk._tls import Verify

DEFAULT_TIMEOUT = 30.0


class _Base:
    def __init__(
        self,
        url: str | None,
        token: str | None,
        config: ServerConfig | None,
        timeout: float,
        verify: Verify = None,
    ) -> None:
        self.config = config or discover(url, token)
        self.timeout = timeout
        # httpx builds a TLS context (and reads the CA bundle) for any verify but False;
        # an http:// server needs none, and a command starts ~40 ms sooner without it.
        self._verify: ssl.SSLContext | bool = False
        if self.config.url.startswith("https://"):
            from gpupool.sdk._tls import verify_setting

            self._verify = verify_setting(verify, self.config)
        self._headers = {"Authorization": f"Bearer {self.config.token}"}

    @property
    def url(self) -> str:
        return self.config.url

    def _unreachable(self, exc: httpx.TransportError) -> ApiError:
        return _http.transport_error(self.config.url, self.config.source, exc, self.timeout)

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def _check_deadline(view: JobView, deadline: float | None, timeout: float | None) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            what = view.kind.value  # "job" or "notebook"
            note = ""
            if what == "notebook" and view.phase == "running":
                note = " (its Jupyter server does not answer yet)"
            raise TimeoutError(f"{what} {view.id} is still {view.phase.value} after "
                               f"{timeout:g} s{note}")


class _Blocking(_Base):
    """A blocking client: used in ``with``, which closes it (``close``) on the way out."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError
