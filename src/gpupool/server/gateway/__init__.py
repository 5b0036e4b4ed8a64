"""gpupool's gateway: reverse proxy from ``/nb/<id>/...`` to each notebook's JupyterLab
and, as a second family of routes, from ``/svc/<name>/...`` to the replicas of inference
services (balanced, retried, woken from zero; API credentials, no cookies).

Public surface (what the server wires up):

- ``create_gateway(directory, key, public_url, *, clock=time.time, services=None)
  -> Starlette``; ``services``: a ``ServiceDirectory`` to route ``/svc/`` with
- ``GatewayServer(app).start(host, port)`` / ``.stop()`` / ``.url``
- ``Directory`` (protocol the server implements), ``Visitor``, ``Target``
- ``mint_ticket(key, nb_id, user, now)``: the one-time sign-in ticket the API hands out;
  the browser opens ``<gateway>/nb/<id>/_gpupool/signin?ticket=<ticket>``
- ``signin_path(nb_id, ticket)``: that path
- ``load_or_create_key(home)``, ``notebook_secret(key, nb_id, attempt)``
- ``ServiceDirectory`` (protocol the server implements for services), ``ServiceTarget``,
  ``Replica``, ``Load``, ``UNREACHED_HEADER``
"""

from __future__ import annotations

from urllib.parse import quote

from gpupool.server.gateway.app import create_gateway
from gpupool.server.gateway.directory import Directory, Target, Visitor
from gpupool.server.gateway.keys import load_or_create_key, notebook_secret
from gpupool.server.gateway.routes import NOTEBOOKS, RESERVED
from gpupool.server.gateway.serve import GatewayServer
from gpupool.server.gateway.service_directory import (
    UNREACHED_HEADER,
    Load,
    Replica,
    ServiceDirectory,
    ServiceTarget,
)
from gpupool.server.gateway.tickets import TICKET_TTL, mint_ticket

DEFAULT_PORT = 8471


def signin_path(nb_id: int, ticket: str) -> str:
    """The gateway path that redeems ``ticket`` for notebook ``nb_id`` (append it to the
    gateway's public URL)."""
    return f"{NOTEBOOKS.base(nb_id)}{RESERVED}/signin?ticket={quote(ticket, safe='')}"


__all__ = [
    "DEFAULT_PORT",
    "TICKET_TTL",
    "UNREACHED_HEADER",
    "Directory",
    "GatewayServer",
    "Load",
    "Replica",
    "ServiceDirectory",
    "ServiceTarget",
    "Target",
    "Visitor",
    "create_gateway",
    "load_or_create_key",
    "mint_ticket",
    "notebook_secret",
    "signin_path",
]
