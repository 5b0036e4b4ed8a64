"""The gateway's secret key and what is derived from it.

One 32-byte key, kept in ``<home>/gateway.key`` (mode 0600, readable by the server alone),
signs sign-in tickets and session cookies and derives each notebook's Jupyter token, so that
the token is never stored anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = "gateway.key"
KEY_BYTES = 32


def load_or_create_key(home: Path) -> bytes:
    """The key in ``home/gateway.key``, created on first use (32 random bytes, mode 0600).

    Creation is atomic: the key is written to a private temporary file and linked into place,
    so two processes starting at once agree on one key and nobody ever reads a half-written
    file. Raises ``ValueError`` naming the file when it exists but is not a key (wrong size).
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / KEY_FILE
    if not path.exists():
        _create(path)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte gateway key; "
            "remove it to make a new one (open notebooks will need to be opened again)"
        )
    return key


def _create(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        # link() fails when another process won the race: then its key is the key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def notebook_secret(key: bytes, nb_id: int, attempt: int) -> str:
    """Jupyter's token for attempt ``attempt`` of notebook ``nb_id``: the hex HMAC-SHA256 of
    ``notebook:<nb_id>:<attempt>`` under ``key``. Deterministic, so the server derives it
    when it launches Jupyter and again when the gateway asks where the notebook is."""
    message = f"notebook:{nb_id}:{attempt}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()
