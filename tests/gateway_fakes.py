"""Helpers for tests/test_gateway.py: a fake Directory, a settable clock, and a real
upstream (a tiny Starlette app on loopback) that reports what it received."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gpupool.server.gateway import Target, Visitor

ALICE = Visitor("alice", "team-a", admin=False)
CAROL = Visitor("carol", "team-a", admin=False)  # alice's teammate
BOB = Visitor("bob", "team-b", admin=False)  # another team
ROOT = Visitor("root", "ops", admin=True)
TOKENS = {"tok-alice": ALICE, "tok-carol": CAROL, "tok-bob": BOB, "tok-root": ROOT}
KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeDirectory:
    """Tokens, users and notebooks as plain dicts; records resume and touch calls."""

    upstream_port: int = 0
    down_port: int = 0
    tokens: dict[str, Visitor] = field(default_factory=dict)
    notebooks: dict[int, Target] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)
    resumed: list[tuple[int, str]] = field(default_factory=list)
    touched: list[tuple[int, float]] = field(default_factory=list)

    def reset(self) -> None:
        self.tokens = dict(TOKENS)
        self.disabled = set()
        self.resumed = []
        self.touched = []
        up = self.upstream_port
        self.notebooks = {
            1: Target(1, "alice", "team-a", "ready", "127.0.0.1", up, "secret-1"),
            2: Target(2, "alice", "team-a", "ready", "127.0.0.1", up, "secret-2"),
            3: Target(3, "alice", "team-a", "suspended"),
            4: Target(4, "alice", "team-a", "ready", "127.0.0.1", self.down_port, "secret-4"),
            5: Target(5, "alice", "team-a", "starting"),
        }

    def authenticate(self, token: str) -> Visitor | None:
        visitor = self.tokens.get(token)
        return None if visitor is None or visitor.user in self.disabled else visitor

    def visitor(self, user: str) -> Visitor | None:
        found = [v for v in TOKENS.values() if v.user == user and user not in self.disabled]
        return found[0] if found else None

    def notebook(self, nb_id: int) -> Target | None:
        return self.notebooks.get(nb_id)

    def resume(self, nb_id: int, visitor: Visitor) -> None:
        self.resumed.append((nb_id, visitor.user))

    def touch(self, nb_id: int, at: float) -> None:
        self.touched.append((nb_id, at))


RELEASE = threading.Event()
"""The streaming endpoint sends its last chunk only once a test sets this."""
STREAM_ENDED = threading.Event()
"""Set when the streaming endpoint's generator ends; ``STREAM_FINISHED`` tells whether it
ran to its end (rather than being cancelled because its client went away)."""
STREAM_FINISHED = threading.Event()


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({
        "method": request.method,
        "raw_path": request.scope["raw_path"].decode(),
        "query": request.scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
        "body_len": len(body),
        "body_head": body[:64].decode("latin-1"),
    })


async def _stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"first\n"
            with anyio.move_on_after(10.0):  # cancellable, unlike a thread waiting
                while not RELEASE.is_set():
                    await anyio.sleep(0.01)
            yield b"released\n" if RELEASE.is_set() else b"timed-out\n"
            STREAM_FINISHED.set()
        finally:
            STREAM_ENDED.set()

    return StreamingResponse(chunks(), media_type="text/plain")


async def _cookies(request: Request) -> Response:
    response = Response("two cookies")
    response.raw_headers.append((b"set-cookie", b"a=1; Path=/"))
    response.raw_headers.append((b"set-cookie", b"b=2; Path=/"))
    return response


async def _away(request: Request) -> Response:
    port = request.url.port
    return Response(status_code=302, headers={"Location": f"http://127.0.0.1:{port}/nb/1/lab"})


async def _ws(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=KERNEL_PROTOCOL if KERNEL_PROTOCOL in offered else None)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text == "headers?":
            scope = websocket.scope
            pairs = [[k.decode(), v.decode()] for k, v in scope["headers"]]
            await websocket.send_text(json.dumps({"headers": pairs,
                                                  "raw_path": scope["raw_path"].decode(),
                                                  "query": scope["query_string"].decode()}))
        elif text is not None and text.startswith("close:"):
            await websocket.close(code=int(text.split(":")[1]))
            return
        elif text is not None:
            await websocket.send_text(text)
        else:
            await websocket.send_bytes(message["bytes"])


def upstream_app() -> Starlette:
    """Stands in for JupyterLab with base_url /nb/<id>/."""
    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[
        Route("/nb/{nb:int}/stream", _stream),
        Route("/nb/{nb:int}/cookies", _cookies),
        Route("/nb/{nb:int}/away", _away),
        WebSocketRoute("/nb/{nb:int}/ws", _ws),
        Route("/{rest:path}", _echo, methods=any_method),
    ])


def header_values(pairs: list[list[str]], name: str) -> list[str]:
    return [v for k, v in pairs if k.lower() == name]
