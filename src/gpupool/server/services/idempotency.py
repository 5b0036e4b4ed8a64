"""``Idempotency-Key`` of job submits: which keys are valid, what makes two bodies "the same",
and the rows that remember a key's job. No transactions of its own: the job store calls these
inside the transaction that inserts the job, so that a key and its job commit together."""

from __future__ import annotations

import hashlib
import json
from typing import cast

from sqlalchemy import Connection, Table, delete, insert, select

from gpupool.schemas.jobs import JobSpec
from gpupool.server.db.tables import IdempotencyKey
from gpupool.server.services.errors import Invalid

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
TTL_S = 24 * 3600.0
"""A key is kept (and answers retries) at least this long; older keys may be purged."""

_KEYS = cast(Table, IdempotencyKey.__table__)


def check_key(key: str | None) -> str | None:
    """``key`` when it is 1 to 200 printable ASCII characters (space to ``~``), None when
    absent; Invalid (422) naming the header otherwise."""
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise Invalid(
            f"{HEADER} header: must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}; "
            "send a fresh random key (e.g. a UUID) per job"
        )
    bad = next((c for c in key if not " " <= c <= "~"), None)
    if bad is not None:
        raise Invalid(
            f"{HEADER} header: only printable ASCII characters are allowed, found "
            f"{bad!a}; send a fresh random key (e.g. a UUID) per job"
        )
    return key


ADDED_LATER = ("time_limit_s",)
"""JobSpec fields added after idempotency keys were stored, left out of the hash when unset."""


def spec_hash(spec: JobSpec) -> str:
    """SHA-256 of the validated spec in canonical JSON: key order, whitespace and defaults
    spelled out or left out make no difference; any changed value does."""
    data = spec.model_dump(mode="json")
    for name in ADDED_LATER:  # unset: hashed as before the field existed (retries across an
        if data.get(name) is None:  # upgrade still match the key's first request)
            data.pop(name, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def find(
    conn: Connection, user_id: int, key: str, digest: str, now: float, *, purge: bool
) -> int | None:
    """The id of the job the user's live ``key`` created, or None when the key is new (or
    expired). Invalid (422) naming the header when the key came with a spec whose
    ``spec_hash`` differs from ``digest``. With ``purge`` (only in a writing transaction),
    keys older than the TTL are deleted first, so an expired key can be used again."""
    cutoff = now - TTL_S
    if purge:
        conn.execute(delete(_KEYS).where(_KEYS.c.created_at < cutoff))
    row = conn.execute(
        select(_KEYS.c.job_id, _KEYS.c.body_hash).where(
            _KEYS.c.user_id == user_id, _KEYS.c.key == key, _KEYS.c.created_at >= cutoff
        )
    ).first()
    if row is None:
        return None
    job_id, body_hash = int(row[0]), str(row[1])
    if body_hash != digest:
        raise Invalid(
            f"{HEADER} header: this key was already used for a different job spec (job "
            f"{job_id}); a retry must resend the same spec, a new job needs a new key"
        )
    return job_id


def record(
    conn: Connection, user_id: int, key: str, digest: str, job_id: int, now: float
) -> None:
    """Remember that ``key`` created ``job_id``. IntegrityError (at once or at commit) when a
    concurrent submit recorded the same (user, key) first: roll back, then ``find`` it."""
    conn.execute(
        insert(_KEYS),
        {"user_id": user_id, "key": key, "body_hash": digest, "job_id": job_id,
         "created_at": now},
    )
