"""Routes of /api/v1 for inference services: deploy (create or update), list, describe,
delete, and the services' API keys. Each handler is one service call; who may do what is
the service layer's (``server/services/inference.py``): a team's members and admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from gpupool.schemas.services import (
    SERVICE_NAME_PATTERN,
    DeployResult,
    ServiceKeyCreate,
    ServiceKeyView,
    ServiceSpec,
    ServiceView,
)
from gpupool.server.api.deps import Address, AppContext, Caller, Ctx, ServicesAccess
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.responses import API_ERRORS, errors
from gpupool.server.services import inference
from gpupool.server.services.errors import Conflict

router = APIRouter(prefix="/api/v1", route_class=SafeRoute, responses=API_ERRORS)

Name = Annotated[str, Path(pattern=SERVICE_NAME_PATTERN, description="The service's name.")]
KeyName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


def _access(ctx: AppContext) -> ServicesAccess:
    if ctx.services is None:
        raise Conflict("this server runs no service controller: services cannot be deployed")
    return ctx.services


def _url_of(access: ServicesAccess):  # type: ignore[no-untyped-def]
    return lambda name: f"{access.url()}/svc/{name}/"


@router.post("/services", response_model=DeployResult,
             responses={201: {"model": DeployResult, "description": "Created"},
                        **errors(403, 409, 422)})
def deploy_service(spec: ServiceSpec, ctx: Ctx, caller: Caller, address: Address,
                   response: Response) -> DeployResult:
    """Create the service (201), or update it when the name is its team's (200): a changed
    spec is rolled out (new replicas start, traffic moves to them once ready, old ones are
    drained and stopped); the same spec changes nothing. 409 when the name is another
    team's service."""
    access = _access(ctx)
    controller = ctx.controller
    result = inference.deploy(
        ctx.db, caller, spec, controller.models, access.board, _url_of(access), access.poke,
        never_fits=lambda s: controller.never_fits(s.replica_spec()), address=address)
    if result.action == "created":
        response.status_code = status.HTTP_201_CREATED
    return result


@router.get("/services", response_model=list[ServiceView])
def list_services(ctx: Ctx, caller: Caller) -> list[ServiceView]:
    """The services of the caller's team (admins: all), by name."""
    access = _access(ctx)
    return inference.list_services(ctx.db, caller, access.board, _url_of(access))


@router.get("/services/{name}", response_model=ServiceView, responses=errors(404))
def get_service(name: Name, ctx: Ctx, caller: Caller) -> ServiceView:
    """One service: its URL, desired and ready replicas, and each replica's node, GPU share
    and state."""
    access = _access(ctx)
    return inference.get_service(ctx.db, caller, name, access.board, _url_of(access))


@router.delete("/services/{name}", response_model=ServiceView, responses=errors(404))
def delete_service(name: Name, ctx: Ctx, caller: Caller, address: Address) -> ServiceView:
    """Delete the service: its URL answers 404 at once (within a second), its replicas are
    stopped, its name is free."""
    access = _access(ctx)
    return inference.delete_service(ctx.db, caller, name, access.board, _url_of(access),
                                    access.poke, address)


@router.post("/services/{name}/keys", response_model=ServiceKeyView,
             status_code=status.HTTP_201_CREATED, responses=errors(404, 409))
def create_service_key(name: Name, body: ServiceKeyCreate, ctx: Ctx, caller: Caller,
                       address: Address) -> ServiceKeyView:
    """A new API key for the service, shown once (`key`): callers send it as
    `Authorization: Bearer <key>` to the service's URL and to nothing else."""
    _access(ctx)
    return inference.create_key(ctx.db, caller, name, body.name, address)


@router.get("/services/{name}/keys", response_model=list[ServiceKeyView],
            responses=errors(404))
def list_service_keys(name: Name, ctx: Ctx, caller: Caller) -> list[ServiceKeyView]:
    _access(ctx)
    return inference.list_keys(ctx.db, caller, name)


@router.delete("/services/{name}/keys/{key_name}", response_model=ServiceKeyView,
               responses=errors(404))
def revoke_service_key(name: Name, key_name: KeyName, ctx: Ctx, caller: Caller,
                       address: Address) -> ServiceKeyView:
    """Revoke the key: the gateway refuses it within a second."""
    _access(ctx)
    return inference.revoke_key(ctx.db, caller, name, key_name, address)
