"""API tokens: generated at random, stored as SHA-256 digests, never stored in clear.

A plain hash (not a slow KDF) is enough because tokens are 256-bit random values, not
passwords: there is nothing to guess.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "gp_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
