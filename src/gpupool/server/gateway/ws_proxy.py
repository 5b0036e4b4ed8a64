"""Relaying one WebSocket between a client and a notebook's server.

Contract: the upstream is connected first, offering the subprotocols the client asked for;
the client is then accepted with the subprotocol the upstream chose (Jupyter's kernel
channels negotiate ``v1.kernel.websocket.jupyter.org``). Text and binary frames pass both
ways unchanged, in order. When either side closes, the other is closed too, with the same
close code where that code may be sent on the wire. An upstream that can't be reached or
refuses the handshake is answered to the client as an HTTP denial (502, or the upstream's
4xx) before any accept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from gpupool.server.gateway import pages
from gpupool.server.gateway.directory import Target
from gpupool.server.gateway.headers import upstream_authority

OPEN_TIMEOUT_S = 5.0


def wire_code(code: int | None) -> int:
    """A close code that may be sent in a Close frame: the given one when it may, 1011 for
    an abnormal end (1006), else 1000."""
    if code is None:
        return 1000
    if code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1011 if code == 1006 else 1000


async def deny(websocket: WebSocket, answer: Response) -> None:
    """Refuse a handshake with ``answer`` when the server supports HTTP denials, else with
    a close (which the server turns into a 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(answer)
    else:
        await websocket.close(code=1008)


async def relay(websocket: WebSocket, target: Target, headers: list[tuple[str, str]],
                on_message: Callable[[], None]) -> None:
    """Proxy ``websocket`` to the same path on ``target`` (see the module docstring).
    ``headers`` are the upstream handshake headers (``Origin`` included, no ``Host``, no
    ``Sec-WebSocket-*``, no ``User-Agent``: see ``headers.upstream_headers``);
    ``on_message`` is called for every frame the client sends."""
    raw_path: bytes = websocket.scope.get("raw_path") or websocket.scope["path"].encode()
    query: bytes = websocket.scope.get("query_string", b"")
    uri = f"ws://{upstream_authority(target)}{raw_path.decode('latin-1')}"
    if query:
        uri += "?" + query.decode("latin-1")
    offered = [Subprotocol(p) for p in websocket.scope.get("subprotocols", [])]
    try:
        upstream = await connect(
            uri, additional_headers=headers, subprotocols=offered or None,
            user_agent_header=websocket.headers.get("user-agent"), proxy=None,
            max_size=None, compression=None, open_timeout=OPEN_TIMEOUT_S)
    except InvalidStatus as exc:
        status = exc.response.status_code
        await deny(websocket, pages.json_error(status if 400 <= status < 500 else 502,
                   f"notebook {target.id} refused the WebSocket ({status})"))
        return
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        await deny(websocket, pages.json_error(502, f"notebook {target.id} is not answering "
                   f"at {upstream_authority(target)} ({type(exc).__name__}); retry in a moment"))
        return
    await relay_frames(websocket, upstream, on_message)


async def relay_frames(websocket: WebSocket, upstream: ClientConnection,
                       on_message: Callable[[], None] = lambda: None) -> None:
    """Accept ``websocket`` with the subprotocol ``upstream`` chose, then relay frames both
    ways until either side closes (``on_message`` at every client frame); ``upstream`` is
    closed in the end. Shared by the notebook and the service proxies."""
    try:
        await websocket.accept(subprotocol=upstream.subprotocol)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_client_to_upstream, websocket, upstream, on_message,
                             tasks.cancel_scope)
            tasks.start_soon(_upstream_to_client, websocket, upstream, tasks.cancel_scope)
    finally:
        await upstream.close()


async def _client_to_upstream(websocket: WebSocket, upstream: ClientConnection,
                              on_message: Callable[[], None],
                              done: anyio.CancelScope) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(code=wire_code(message.get("code")),
                                     reason=message.get("reason") or "")
                return
            on_message()
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])
    except ConnectionClosed:
        pass  # the upstream went first; _upstream_to_client closes the client
    else:
        done.cancel()


async def _upstream_to_client(websocket: WebSocket, upstream: ClientConnection,
                              done: anyio.CancelScope) -> None:
    try:
        async for data in upstream:
            if isinstance(data, str):
                await websocket.send_text(data)
            else:
                await websocket.send_bytes(data)
    except ConnectionClosed:
        pass
    except (OSError, WebSocketDisconnect):  # the client is gone; the other task sees it
        return
    with contextlib.suppress(Exception):
        await websocket.close(code=wire_code(upstream.close_code),
                              reason=upstream.close_reason or "")
    done.cancel()
