"""Inference services in the SDK: ``Client().services`` (blocking).

    with Client() as gp:
        gp.services.deploy("echo.yaml")          # create, or update (a rolling update)
        svc = gp.services.wait_ready("echo")     # at least one replica answers
        print(svc.url, svc.ready_replicas)

A service is a ServiceSpec, a mapping of its fields, or the path of a YAML file (``kind:
service``). A spec that breaks the field contract raises pydantic's ValidationError before
any request; the server's refusals come back as ApiError (404 unknown, 409 another team's
name, 422 a pool that could never hold a replica).
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from pydantic import TypeAdapter

from gpupool.schemas.services import (
    DeployResult,
    ServiceKeyCreate,
    ServiceKeyView,
    ServiceSpec,
    ServiceView,
)
from gpupool.sdk._wire import API, Call

Definition = ServiceSpec | Mapping[str, Any] | str | Path


def read_service_file(path: Path) -> dict[str, Any]:
    """The mapping in a service's YAML file, its ``workdir`` made absolute (relative to the
    file; none: the current directory, where the command's files are). ValueError saying
    what is wrong with the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a service is a YAML mapping (kind: service, name, "
                         "command, ...)")
    workdir = data.get("workdir")
    if workdir is None:
        data["workdir"] = os.getcwd()
    elif isinstance(workdir, str):
        data["workdir"] = os.path.abspath(os.path.join(path.parent, os.path.expanduser(workdir)))
    return data


def load_service(definition: Definition) -> ServiceSpec:
    """A ServiceSpec from a spec, a mapping or a YAML file."""
    if isinstance(definition, ServiceSpec):
        return definition
    if isinstance(definition, str | Path):
        return ServiceSpec.model_validate(read_service_file(Path(definition)))
    return ServiceSpec.model_validate(dict(definition))


def _path(name: str, *rest: str) -> str:
    return "/".join([f"{API}/services/{quote(name, safe='')}",
                     *(quote(r, safe="") for r in rest)])


_LIST = TypeAdapter(list[ServiceView])
_KEYS = TypeAdapter(list[ServiceKeyView])


class Services:
    """Deploy, list, describe and delete services, and manage their API keys; ``do`` sends
    one call (the client's)."""

    def __init__(self, do: Callable[[Call[Any]], Any]) -> None:
        self._do = do

    def deploy(self, definition: Definition) -> DeployResult:
        """Create the service, or update it (same name, its team's): a changed spec rolls
        out; the same spec changes nothing (``action`` says which)."""
        body = load_service(definition).model_dump(mode="json")
        result: DeployResult = self._do(Call("POST", f"{API}/services",
                                             DeployResult.model_validate, body=body))
        return result

    def list(self) -> list[ServiceView]:
        """The services of the caller's team (admins: all), by name."""
        result: list[ServiceView] = self._do(Call("GET", f"{API}/services",
                                                  _LIST.validate_python))
        return result

    def get(self, name: str) -> ServiceView:
        result: ServiceView = self._do(Call("GET", _path(name), ServiceView.model_validate))
        return result

    def delete(self, name: str) -> ServiceView:
        """Delete it: its URL stops answering, its replicas stop."""
        result: ServiceView = self._do(Call("DELETE", _path(name),
                                            ServiceView.model_validate))
        return result

    def wait_ready(self, name: str, replicas: int = 1, timeout: float | None = 120.0,
                   poll: float = 0.5) -> ServiceView:
        """The service once at least ``replicas`` replicas are ready; TimeoutError after
        ``timeout`` seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.get(name)
            if view.ready_replicas >= replicas:
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"service {name}: {view.ready_replicas} of {replicas} "
                                   f"replicas ready after {timeout:g} s")
            time.sleep(poll)

    def create_key(self, name: str, key_name: str) -> ServiceKeyView:
        """A new API key (``.key``: shown this once)."""
        body = ServiceKeyCreate(name=key_name).model_dump(mode="json")
        result: ServiceKeyView = self._do(Call("POST", _path(name, "keys"),
                                               ServiceKeyView.model_validate, body=body))
        return result

    def keys(self, name: str) -> builtins.list[ServiceKeyView]:
        result: builtins.list[ServiceKeyView] = self._do(Call("GET", _path(name, "keys"),
                                                     _KEYS.validate_python))
        return result

    def revoke_key(self, name: str, key_name: str) -> ServiceKeyView:
        """Revoke it: the gateway refuses it within a second."""
        result: ServiceKeyView = self._do(Call("DELETE", _path(name, "keys", key_name),
                                               ServiceKeyView.model_validate))
        return result
