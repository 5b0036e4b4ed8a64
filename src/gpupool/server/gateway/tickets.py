"""One-time sign-in tickets: the API mints one, the browser carries it to the gateway once.

A ticket names a notebook and a user and is valid for ``TICKET_TTL`` seconds; its nonce is
accepted once. Used nonces are remembered (in memory) until their ticket expires, so a
ticket can't be replayed while it is still valid; after a gateway restart the memory is
empty, but any ticket older than the restart is at most 60 s from expiring anyway.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

from gpupool.server.gateway.signing import seal, unseal

TICKET_TTL = 60.0
CLOCK_SKEW = 5.0
PURPOSE = "gpupool-gateway-ticket"


def mint_ticket(key: bytes, nb_id: int, user: str, now: float) -> str:
    """A ticket that lets ``user`` sign in to notebook ``nb_id`` once, until ``now + 60``.

    The caller (the API) must already have checked that ``user`` may open the notebook; the
    gateway checks again on every request made with the session the ticket opens."""
    fields = {"nb": nb_id, "u": user, "exp": now + TICKET_TTL, "n": secrets.token_urlsafe(16)}
    return seal(key, PURPOSE, fields)


class TicketBook:
    """Redeems tickets, each at most once. Thread-safe."""

    def __init__(self, key: bytes, clock: Callable[[], float]) -> None:
        self._key = key
        self._clock = clock
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def redeem(self, ticket: str, nb_id: int) -> str | None:
        """The user ``ticket`` signs in to notebook ``nb_id``; None when the ticket is forged,
        expired, for another notebook, or already used. A ticket is used up only when it
        is accepted."""
        fields = unseal(self._key, PURPOSE, ticket)
        if fields is None:
            return None
        nb, user, exp, nonce = fields.get("nb"), fields.get("u"), fields.get("exp"), fields.get("n")
        if not (isinstance(nb, int) and isinstance(user, str) and isinstance(nonce, str)):
            return None
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return None
        now = self._clock()
        if nb != nb_id or not now < exp <= now + TICKET_TTL + CLOCK_SKEW:
            return None
        with self._lock:
            self._forget_expired(now)
            if nonce in self._used:
                return None
            self._used[nonce] = float(exp)
        return user

    def _forget_expired(self, now: float) -> None:
        for nonce in [n for n, exp in self._used.items() if exp <= now]:
            del self._used[nonce]
