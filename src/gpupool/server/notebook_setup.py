"""What a server needs to run notebooks besides the loop: the gateway's key (from which each
notebook's Jupyter secret is derived, so the launcher can start them) and what the API needs
to send a browser to the gateway."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from gpupool.server.api.deps import GatewayAccess
from gpupool.server.controller import Controller
from gpupool.server.gateway.keys import load_or_create_key, notebook_secret
from gpupool.server.gateway.tickets import mint_ticket
from gpupool.server.settings import Settings


def attach_notebooks(controller: Controller, settings: Settings) -> bytes:
    """Load (or create) the gateway's key and let the launcher derive notebooks' secrets
    from it; returns the key. Raises OSError/ValueError (an unreadable or wrong key file)."""
    key = load_or_create_key(settings.home)
    controller.launcher.notebook_secret = partial(notebook_secret, key)
    return key


def gateway_access(key: bytes, url: Callable[[], str]) -> GatewayAccess:
    """The API's access to the gateway whose public URL ``url()`` gives."""
    return GatewayAccess(url, partial(mint_ticket, key))
