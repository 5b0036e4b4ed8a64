"""The error answers the API documents in its OpenAPI: one shared table, picked per route.

Every error body is ``ErrorBody`` (``{"detail": str}``); 422 included: the app answers
validation errors with the same string ``detail`` (see ``app.validation_error``), so the
document shows that model instead of FastAPI's default array model.
"""

from __future__ import annotations

from typing import Any

from gpupool.schemas.errors import ErrorBody

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
        "description": "Invalid input: `detail` names each bad field (`field: problem; ...`)",
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The entries of ``ERROR_RESPONSES`` for ``codes`` (the same objects, not copies)."""
    return {code: ERROR_RESPONSES[code] for code in codes}


# Every /api/v1 route: authentication, and the app-wide refusal of hostile input (422).
API_ERRORS = errors(401, 422)
