"""/api/v1/server: the server itself, for admins: where it stands, and stopping it
(``gpupool down``; the modes are ``server/stopping.py``'s). A server that ``gpupool up`` did
not start (an app built in a test) has no ``app.state.stopper`` and answers 409."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from gpupool.schemas.server import ServerState, ServerStop
from gpupool.server.api.deps import Address, Caller
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.responses import API_ERRORS, errors
from gpupool.server.services.errors import Conflict, Forbidden
from gpupool.server.services.identity import Principal
from gpupool.server.stopping import Stopper

router = APIRouter(prefix="/api/v1", route_class=SafeRoute, responses=API_ERRORS)


def _stopper(request: Request, caller: Principal) -> Stopper:
    if not caller.admin:
        raise Forbidden(
            f"only an admin may stop or inspect the server, and {caller.user!r} (team "
            f"{caller.team!r}) is not one: ask an admin, or run `gpupool down` as the account "
            "that started the server (it holds the admin token)")
    stopper: Stopper | None = getattr(request.app.state, "stopper", None)
    if stopper is None:
        raise Conflict("this server was not started by `gpupool up` and cannot stop itself; "
                       "stop it the way it was started")
    return stopper


@router.get("/server", response_model=ServerState, responses=errors(403, 409))
def server_state(request: Request, caller: Caller) -> ServerState:
    """The server's version, whether it is stopping, and how many jobs run and wait."""
    return _stopper(request, caller).state()


@router.post("/server/shutdown", response_model=ServerState,
             status_code=status.HTTP_202_ACCEPTED, responses=errors(403, 409))
def shutdown(body: ServerStop, request: Request, caller: Caller,
             address: Address) -> ServerState:
    """Stop the server (admin only): ``leave`` (at once; running jobs keep running and the
    next ``gpupool up`` re-adopts them), ``drain`` (start no new job, stop once none runs) or
    ``cancel`` (cancel the running jobs, then stop). Pending jobs stay queued in every mode.
    Answers at once (202) with the plan in ``message``; the server stops in the background,
    and a later request may change the mode."""
    return _stopper(request, caller).begin(body.mode, caller, address)
