"""The error answers the API documents in its OpenAPI: one shared table, picked per route.

Every error body is ``ErrorBody`` (``{"detail": str}``); 422 included: the app answers
validation errors with the same string ``detail`` (see ``app.validation_error``), so the
document shows that model instead of FastAPI's default array model.
"""

from __future__ import annotations

from typing import Any

from gpupool.schemas.errors import ErrorBody

MAX_ID = 2**31 - 1
"""The largest id of a row: the id columns are 32-bit integers on PostgreSQL."""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad request"},
    401: {"model": ErrorBody, "description": "Missing, unknown, expired or revoked API token"},
    403: {"model": ErrorBody, "description": "Not allowed for this caller (e.g. not an admin)"},
    404: {"model": ErrorBody, "description": "No such object (or not visible to your team)"},
    405: {"model": ErrorBody, "description": "Method not allowed (the Allow header lists them)"},
    409: {"model": ErrorBody, "description": "Conflicts with the object's current state"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    422: {
        "model": ErrorBody,
        "description": (
            "Invalid input: `detail` names each bad field (`field: problem; ...`). Besides "
            "the constraints this document shows, anywhere in a request: text holding a NUL "
            "character or a lone surrogate, a NaN/Infinity number, a body that is not UTF-8 "
            "JSON; and what only the server can check, e.g. a GPU model, queue, trace file "
            "or Unix account that does not exist, a list cursor that is not this listing's, "
            "a pipeline's step graph, a cron expression, an uploaded CSV's rows."
        ),
    },
    503: {
        "model": ErrorBody,
        "description": "The database is unreachable or busy for now (`detail` names it); "
                       "the request did not complete: retry after `Retry-After` seconds",
    },
    507: {
        "model": ErrorBody,
        "description": "A write found the disk full (`detail` names the directory) and was "
                       "rolled back: send the request again once space is freed there",
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The entries of ``ERROR_RESPONSES`` for ``codes`` (the same objects, not copies)."""
    return {code: ERROR_RESPONSES[code] for code in codes}


# Every /api/v1 route: authentication, the app-wide refusal of hostile input (422), and
# storage failures (api/storage_errors.py): any route reads the database, and signing in
# may write to it (a token's last use), so each may meet 503 or 507.
API_ERRORS = errors(401, 422, 503, 507)
