"""Sealed tokens: a few JSON fields and an HMAC-SHA256 over them, URL- and cookie-safe.

A sealed token is ``<base64url(json)>.<base64url(mac)>``. The MAC covers a purpose label as
well as the fields, so a token sealed for one purpose (a sign-in ticket) is never accepted
for another (a session cookie). Sealing hides nothing: the fields are readable by anyone who
holds the token; they are only tamper-proof.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

MAX_TOKEN_CHARS = 4096


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, body: str) -> bytes:
    return hmac.new(key, purpose.encode() + b"\0" + body.encode("ascii"), hashlib.sha256).digest()


def seal(key: bytes, purpose: str, fields: dict[str, Any]) -> str:
    """``fields`` (JSON-serialisable) sealed under ``key`` for ``purpose``."""
    body = _b64(json.dumps(fields, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(_mac(key, purpose, body))}"


def unseal(key: bytes, purpose: str, token: str) -> dict[str, Any] | None:
    """The fields of ``token`` when it was sealed by ``key`` for ``purpose``; None for
    anything else (malformed, too long, forged, sealed for another purpose). Never raises."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        return None
    body, mac = token.split(".")
    try:
        given = _unb64(mac)
        if not hmac.compare_digest(given, _mac(key, purpose, body)):
            return None
        fields = json.loads(_unb64(body))
    except (binascii.Error, ValueError, UnicodeError):
        return None
    return fields if isinstance(fields, dict) else None
