"""Registry credentials for jobs' images, as a team keeps them: a team secret named
``registry.<host>`` (``:`` written ``_``) whose value is this JSON. One rule for the CLI that
writes them and the server that reads them at launch."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

PREFIX = "registry."
HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,200}(:[0-9]{1,5})?$")


class RegistryLogin(BaseModel):
    """What a team's jobs sign in to ``registry`` with when podman pulls their images."""

    registry: str = Field(pattern=HOST.pattern, description="host or host:port")
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=4096)


def secret_name(registry: str) -> str:
    """The team secret holding ``registry``'s login (ValueError for a host that is not one)."""
    if not HOST.match(registry):
        raise ValueError(f"{registry!r} is not a registry host (host or host:port)")
    return PREFIX + registry.replace(":", "_")
