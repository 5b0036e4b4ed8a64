"""``/api/v1/code/{digest}``: code archives for ``gpupool run --code`` (services/code_store).
Any authenticated caller, for their own team only: HEAD says whether the team has the
archive (200) or not (404), PUT uploads it (201 new, 200 already there; 413 past the
server's limit; 422 when the body's SHA-256 is not the digest)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from gpupool.server.api.deps import Caller, Ctx
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.responses import API_ERRORS, errors
from gpupool.server.services import code_store

router = APIRouter(prefix="/api/v1", route_class=SafeRoute, responses=API_ERRORS)
Digest = Annotated[str, Path(pattern=r"^sha256:[0-9a-f]{64}$",
                            description="sha256: and the archive's 64 lower-case hex digits")]


@router.head("/code/{digest}", responses=errors(404, 422))
def has_code(digest: Digest, ctx: Ctx, caller: Caller) -> Response:
    """200 when your team has uploaded the archive ``digest``, else 404."""
    if not code_store.has(ctx.db, caller.team_id, digest):
        raise code_store.not_found(digest)
    return Response(status_code=200)


@router.put("/code/{digest}", status_code=201,
            responses={200: {"description": "Your team had it already"}, **errors(413, 422)})
async def put_code(digest: Digest, request: Request, response: Response, ctx: Ctx,
                   caller: Caller) -> dict[str, str]:
    """Upload a code archive (a gzip'd tar, as the raw body) under its SHA-256."""
    created = await code_store.upload(
        ctx.db, ctx.settings.home, caller, digest, ctx.settings.code_limit_mib,
        request.headers.get("content-length"), request.stream())
    response.status_code = 201 if created else 200
    return {"digest": digest, "status": "created" if created else "exists"}
