"""The gateway's session cookie: proof that a user signed in to one notebook, for 12 hours.

The cookie is named after the notebook (``gpupool_nb_<id>``), scoped to its path, and its
sealed value names the notebook too: a cookie opens only the notebook it names. It proves
who signed in, not that they may still enter: the gateway re-checks the user and the
notebook's owner on every request.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupool.server.gateway.signing import seal, unseal

SESSION_TTL = 12 * 3600.0
PURPOSE = "gpupool-gateway-session"


@dataclass(frozen=True)
class Session:
    nb_id: int
    user: str
    expires: float


def make_session(key: bytes, nb_id: int, user: str, now: float) -> str:
    """The cookie value for ``user`` in notebook ``nb_id``, valid until ``now + 12 h``."""
    return seal(key, PURPOSE, {"nb": nb_id, "u": user, "exp": now + SESSION_TTL})


def read_session(key: bytes, value: str, now: float) -> Session | None:
    """The session ``value`` proves, if it was made with ``key`` and has not expired."""
    fields = unseal(key, PURPOSE, value)
    if fields is None:
        return None
    nb, user, exp = fields.get("nb"), fields.get("u"), fields.get("exp")
    if not (isinstance(nb, int) and isinstance(user, str) and isinstance(exp, int | float)):
        return None
    if isinstance(nb, bool) or isinstance(exp, bool) or exp <= now:
        return None
    return Session(nb, user, float(exp))


def set_cookie_header(name: str, value: str, path: str, secure: bool) -> str:
    """The ``Set-Cookie`` value for a session cookie: HttpOnly, SameSite=Lax, only for
    ``path``, ``Secure`` when the gateway is served over https."""
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={int(SESSION_TTL)}",
             "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
