"""The errors the SDK raises: the server said no (or could not be reached), no server is
configured, or a notebook waited on cannot become ready."""

from __future__ import annotations


class ApiError(Exception):
    """A request failed.

    ``status`` is the HTTP status (4xx: the request was wrong or not allowed; 5xx: the server
    failed) or 0 when the server could not be reached or did not answer. ``message`` is one
    line that names the field or problem, fit to show to a person as is.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def unreachable(self) -> bool:
        """True when no answer came back (connection refused, timeout, DNS failure)."""
        return self.status == 0

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r})"


class ConfigError(Exception):
    """No usable server address or token: the message says what to set."""


class NotebookNotReady(Exception):
    """A notebook that was waited on (``wait_ready``) cannot become ready without someone
    acting: it ended (deleted, or failed), it is suspended (resume it first), or the
    workload is not a notebook at all.

    ``view`` is the workload as last seen (a ``JobView``); ``message`` one line fit to show
    to a person as is.
    """

    def __init__(self, view: object, message: str) -> None:
        super().__init__(message)
        self.view = view
        self.message = message
