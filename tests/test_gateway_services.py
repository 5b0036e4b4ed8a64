"""The gateway's inference-service routes (``/svc/<name>/...``): a real gateway on loopback in
front of real replicas listening on Unix sockets, with a fake ServiceDirectory, the fake
notebook Directory of tests/gateway_fakes.py (its tokens) and a fake clock for the caches.

Replicas: two echo replicas (they answer what they received and who they are), one whose
front answers every request with the "service port refused" 502, one that reads a request
and hangs up without answering, and one whose socket does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from gateway_fakes import FakeClock, FakeDirectory, free_port, header_values
from gpupool.server.gateway import (
    UNREACHED_HEADER,
    GatewayServer,
    Load,
    Replica,
    ServiceTarget,
    create_gateway,
)
from gpupool.server.gateway.balancer import Balancer
from gpupool.server.gateway.svc_cache import CachedServices
from gpupool.server.gateway.svc_proxy import UdsClients

KEY = b"k" * 32
WAIT_S = 15.0
SLOW_RELEASE = threading.Event()
SSE_RELEASE = threading.Event()


def wait_for(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


# ---------------------------------------------------------------- replicas on Unix sockets


@dataclass
class Counters:
    hits: int = 0
    slow_active: int = 0


def echo_replica(rid: int, counters: Counters) -> Starlette:
    async def echo(request: Request) -> Response:
        counters.hits += 1
        body = await request.body()
        return JSONResponse({
            "replica": rid, "method": request.method,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
            "body_len": len(body), "body_head": body[:32].decode("latin-1"),
        })

    async def slow(request: Request) -> Response:
        counters.slow_active += 1
        try:
            with anyio.move_on_after(WAIT_S):
                while not SLOW_RELEASE.is_set():
                    await anyio.sleep(0.01)
        finally:
            counters.slow_active -= 1
        return JSONResponse({"replica": rid})

    async def sse(request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            with anyio.move_on_after(WAIT_S):
                while not SSE_RELEASE.is_set():
                    await anyio.sleep(0.01)
            yield b"data: released\n\n" if SSE_RELEASE.is_set() else b"data: timed-out\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "headers?":
                scope = websocket.scope
                await websocket.send_text(json.dumps({
                    "replica": rid, "raw_path": scope["raw_path"].decode(),
                    "query": scope["query_string"].decode(),
                    "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]}))
            elif message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])

    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[
        Route("/slow", slow), Route("/sse", sse), WebSocketRoute("/ws", ws),
        Route("/{rest:path}", echo, methods=any_method),
    ])


def unreached_replica(counters: Counters) -> Starlette:
    async def refuse(request: Request) -> Response:
        counters.hits += 1
        await request.body()
        return Response("service port refused", status_code=502,
                        headers={UNREACHED_HEADER: "1"})

    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[Route("/{rest:path}", refuse, methods=any_method)])


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class UdsServer:
    """uvicorn serving ``app`` on the Unix socket ``path``, on a daemon thread."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(128)
        sock.setblocking(False)
        config = uvicorn.Config(app, ws="websockets-sansio", lifespan="off",
                                log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2)
        self.server = _Quiet(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[sock])), daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class _HangUp(socketserver.BaseRequestHandler):
    """Reads one request's head, then closes the connection without a word."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        server: HangUpServer = self.server  # type: ignore[assignment]
        server.hits += 1


class HangUpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    hits = 0


# ---------------------------------------------------------------- the control plane, faked


@dataclass
class FakeServices:
    """Services as a dict; records wakes and reports; ``on_wake`` hooks by service."""

    targets: dict[str, ServiceTarget] = field(default_factory=dict)
    keys: dict[str, set[str]] = field(default_factory=dict)
    woken: list[str] = field(default_factory=list)
    reports: list[tuple[str, Load]] = field(default_factory=list)
    on_wake: dict[str, Callable[[], None]] = field(default_factory=dict)

    def service(self, name: str) -> ServiceTarget | None:
        return self.targets.get(name)

    def key_valid(self, name: str, key: str) -> bool:
        return key in self.keys.get(name, set())

    def wake(self, name: str) -> None:
        self.woken.append(name)
        hook = self.on_wake.get(name)
        if hook is not None:
            hook()

    def report(self, name: str, load: Load) -> None:
        self.reports.append((name, load))

    def loads(self, name: str) -> list[Load]:
        return [load for n, load in list(self.reports) if n == name]


@dataclass
class World:
    gateway: GatewayServer
    services: FakeServices
    clock: FakeClock
    sockets: dict[str, str]
    counters: dict[str, Counters]
    hangup: HangUpServer

    def reset(self) -> None:
        s = self.sockets
        r1, r2 = Replica(11, s["r1"]), Replica(12, s["r2"])
        layout: dict[str, tuple[Replica, ...]] = {
            "echo": (r1,), "pair": (r1, r2),
            "drain": (Replica(11, s["r1"], draining=True), r2),
            "drained": (Replica(11, s["r1"], draining=True),),
            "gone": (Replica(41, s["gone"]), r2),
            "unreached": (Replica(21, s["unreached"]), r2),
            "unreached-only": (Replica(22, s["unreached"]),),
            "flaky": (Replica(31, s["hangup"]), r2),
            "dead": (Replica(32, s["hangup"]),),
            "dead-get": (Replica(33, s["hangup"]),),
        }
        self.services.targets = {name: ServiceTarget(name, "team-a", False, replicas)
                                 for name, replicas in layout.items()}
        self.services.targets["pub"] = ServiceTarget("pub", "team-b", True, (r1,))
        for name, timeout in (("sleepy", 20.0), ("never", 1.0), ("abandoned", 30.0)):
            self.services.targets[name] = ServiceTarget(name, "team-a", False, (),
                                                        wake_timeout_s=timeout)
        self.services.keys = {"echo": {"key-echo"}}
        self.services.woken.clear()
        self.services.on_wake.clear()

    def call(self, method: str, path: str, *, token: str | None = None,
             timeout: float = 20, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        with httpx.Client(base_url=self.gateway.url, trust_env=False, timeout=timeout) as client:
            return client.request(method, path, headers=headers, **kwargs)

    def echo(self, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.call(kwargs.pop("method", "GET"), path, **kwargs)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def ws(self, path: str, token: str | None = None) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return connect(self.gateway.url.replace("http://", "ws://") + path,
                       additional_headers=headers, proxy=None, open_timeout=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("uds")
    sockets = {n: str(base / f"{n}.sock") for n in ("r1", "r2", "unreached", "hangup", "gone")}
    counters = {n: Counters() for n in ("r1", "r2", "unreached")}
    upstreams = [UdsServer(echo_replica(11, counters["r1"]), sockets["r1"]),
                 UdsServer(echo_replica(12, counters["r2"]), sockets["r2"]),
                 UdsServer(unreached_replica(counters["unreached"]), sockets["unreached"])]
    hangup = HangUpServer(sockets["hangup"], _HangUp)
    threading.Thread(target=hangup.serve_forever, daemon=True).start()
    directory = FakeDirectory()
    directory.reset()
    services, clock = FakeServices(), FakeClock()
    port = free_port()
    gateway = GatewayServer(create_gateway(directory, KEY, f"http://127.0.0.1:{port}",
                                           clock=clock, services=services))
    gateway.start("127.0.0.1", port)
    try:
        yield World(gateway, services, clock, sockets, counters, hangup)
    finally:
        SLOW_RELEASE.set()
        SSE_RELEASE.set()
        gateway.stop()
        for upstream in upstreams:
            upstream.stop()
        hangup.shutdown()
        hangup.server_close()


@pytest.fixture
def w(world: World) -> World:
    world.clock.advance(5.0)  # past every cache entry
    world.reset()
    SLOW_RELEASE.clear()
    SSE_RELEASE.clear()
    return world


# ---------------------------------------------------------------- routing and headers


def test_bare_service_path_redirects_to_the_slash(w: World) -> None:
    response = w.call("GET", "/svc/echo?x=1")
    assert response.status_code == 307
    assert response.headers["location"] == "/svc/echo/?x=1"


def test_path_without_prefix_query_and_forwarding_headers_reach_the_replica(w: World) -> None:
    port = urlsplit(w.gateway.url).port
    seen = w.echo("/svc/echo/v1/a%20b%2Fc?x=%2F&y=a+b", token="tok-alice",
                  headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Prefix": "/evil",
                           "Cookie": "gpupool_nb_1=v; theme=dark", "Accept": "text/plain"})
    assert seen["replica"] == 11
    assert seen["raw_path"] == "/v1/a%20b%2Fc"  # the prefix is X-Forwarded-Prefix's
    assert seen["query"] == "x=%2F&y=a+b"
    h = seen["headers"]
    assert header_values(h, "x-forwarded-prefix") == ["/svc/echo"]
    assert header_values(h, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(h, "x-forwarded-proto") == ["http"]
    assert header_values(h, "host") == [f"127.0.0.1:{port}"]
    assert header_values(h, "x-forwarded-host") == [f"127.0.0.1:{port}"]
    assert header_values(h, "cookie") == ["theme=dark"]
    assert header_values(h, "accept") == ["text/plain"]
    assert header_values(h, "authorization") == []
    assert "6.6.6.6" not in json.dumps(seen) and "tok-alice" not in json.dumps(seen)


def test_the_service_root_is_the_replicas_root(w: World) -> None:
    seen = w.echo("/svc/echo/?q=1", token="tok-alice")
    assert (seen["raw_path"], seen["query"]) == ("/", "q=1")
    assert header_values(seen["headers"], "x-forwarded-prefix") == ["/svc/echo"]


def test_unknown_service_is_404(w: World) -> None:
    for token in (None, "tok-alice"):
        response = w.call("GET", "/svc/nope/x", token=token)
        assert response.status_code == 404
        assert "nope" in response.json()["detail"]


def test_request_bodies_small_large_and_chunked_are_forwarded(w: World) -> None:
    seen = w.echo("/svc/echo/small", method="POST", token="tok-alice", content=b"hello")
    assert (seen["body_len"], seen["body_head"]) == (5, "hello")
    big = b"x" * (3 * 1024 * 1024)
    seen = w.echo("/svc/echo/big", method="PUT", token="tok-alice", content=big)
    assert seen["body_len"] == len(big)

    def chunks() -> Iterator[bytes]:
        yield b"hello "
        yield b"world"

    seen = w.echo("/svc/echo/chunked", method="POST", token="tok-alice", content=chunks())
    assert (seen["body_len"], seen["body_head"]) == (11, "hello world")


# ---------------------------------------------------------------- who may call


def test_public_service_needs_nothing_and_passes_authorization_through(w: World) -> None:
    assert w.echo("/svc/pub/x")["replica"] == 11
    seen = w.echo("/svc/pub/x", headers={"Authorization": "Bearer their-own"})
    assert header_values(seen["headers"], "authorization") == ["Bearer their-own"]


def test_token_service_wants_a_credential(w: World) -> None:
    missing = w.call("GET", "/svc/echo/x")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json()["detail"]
    basic = w.call("GET", "/svc/echo/x", headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401
    bad = w.call("GET", "/svc/echo/x", token="forged")
    assert bad.status_code == 401 and "echo" in bad.json()["detail"]


def test_team_members_admins_and_service_keys_get_in_other_teams_do_not(w: World) -> None:
    assert w.echo("/svc/echo/x", token="tok-alice")["replica"] == 11
    assert w.echo("/svc/echo/x", token="tok-carol")["replica"] == 11  # alice's teammate
    assert w.echo("/svc/echo/x", token="tok-root")["replica"] == 11  # admin
    seen = w.echo("/svc/echo/x", token="key-echo")
    assert header_values(seen["headers"], "authorization") == []
    foreign = w.call("GET", "/svc/echo/x", token="tok-bob")
    assert foreign.status_code == 403
    assert "team-b" in foreign.json()["detail"]


def test_revoked_key_stops_working_within_the_cache_second(w: World) -> None:
    assert w.call("GET", "/svc/echo/x", token="key-echo").status_code == 200
    w.services.keys["echo"].clear()
    w.clock.advance(0.5)
    assert w.call("GET", "/svc/echo/x", token="key-echo").status_code == 200
    w.clock.advance(0.5)
    assert w.call("GET", "/svc/echo/x", token="key-echo").status_code == 401
    w.clock.advance(0.5)  # the negative answer is cached too
    w.services.keys["echo"].add("key-echo")
    assert w.call("GET", "/svc/echo/x", token="key-echo").status_code == 401
    w.clock.advance(0.5)
    assert w.call("GET", "/svc/echo/x", token="key-echo").status_code == 200


# ---------------------------------------------------------------- balancing and reports


def test_concurrent_requests_spread_over_replicas_and_are_reported(w: World) -> None:
    results: list[httpx.Response] = []

    def slow() -> None:
        results.append(w.call("GET", "/svc/pair/slow", token="tok-alice"))

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    r1, r2 = w.counters["r1"], w.counters["r2"]
    wait_for(lambda: r1.slow_active == 1 and r2.slow_active == 1)
    wait_for(lambda: any(load.inflight.get(11) == 1 and load.inflight.get(12) == 1
                         for load in w.services.loads("pair")))
    finished = w.services.loads("pair")[-1].finished
    SLOW_RELEASE.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert sorted(r.json()["replica"] for r in results) == [11, 12]

    def settled() -> bool:
        loads = w.services.loads("pair")
        return bool(loads) and loads[-1].finished >= finished + 2
    wait_for(settled)
    last = w.services.loads("pair")[-1]
    assert last.inflight == {0: 0}


def test_draining_replica_gets_nothing_while_another_is_ready(w: World) -> None:
    replicas = {w.echo("/svc/drain/x", token="tok-alice")["replica"] for _ in range(5)}
    assert replicas == {12}
    assert w.echo("/svc/drained/x", token="tok-alice")["replica"] == 11


# ---------------------------------------------------------------- retries


def test_a_replica_whose_socket_is_gone_is_skipped_for_any_method(w: World) -> None:
    for method in ("POST", "PUT", "GET"):
        seen = w.echo("/svc/gone/x", method=method, token="tok-alice", content=b"{}")
        assert (seen["replica"], seen["method"]) == (12, method)


def test_unreached_502_is_retried_for_a_post_on_another_replica(w: World) -> None:
    before = w.counters["unreached"].hits
    seen = w.echo("/svc/unreached/x", method="POST", token="tok-alice", content=b"payload")
    assert (seen["replica"], seen["body_head"]) == (12, "payload")
    assert w.counters["unreached"].hits == before + 1  # it was asked first


def test_all_attempts_unreached_is_a_502_naming_the_service(w: World) -> None:
    before = w.counters["unreached"].hits
    response = w.call("POST", "/svc/unreached-only/x", token="tok-alice", content=b"x")
    assert response.status_code == 502
    assert "unreached-only" in response.json()["detail"]
    assert w.counters["unreached"].hits == before + 3
    assert UNREACHED_HEADER not in response.headers


def test_hang_up_before_answering_retries_a_get_but_not_a_post(w: World) -> None:
    before = w.hangup.hits
    for _ in range(3):
        assert w.echo("/svc/flaky/x", token="tok-alice")["replica"] == 12
    assert w.hangup.hits >= before + 1  # the first GET went there first

    before = w.hangup.hits
    post = w.call("POST", "/svc/dead/x", token="tok-alice", content=b"once")
    assert post.status_code == 502 and "dead" in post.json()["detail"]
    assert w.hangup.hits == before + 1

    before = w.hangup.hits
    get = w.call("GET", "/svc/dead-get/x", token="tok-alice")
    assert get.status_code == 502
    assert w.hangup.hits == before + 3


# ---------------------------------------------------------------- scale from zero


def test_a_request_wakes_the_service_and_waits_for_its_first_replica(w: World) -> None:
    def appear() -> None:
        target = w.services.targets["sleepy"]
        replicas = (Replica(11, w.sockets["r1"]),)
        threading.Timer(0.3, lambda: w.services.targets.__setitem__(
            "sleepy", ServiceTarget("sleepy", target.team, False, replicas))).start()

    w.services.on_wake["sleepy"] = appear
    assert w.echo("/svc/sleepy/x", token="tok-alice")["replica"] == 11
    assert w.services.woken == ["sleepy"]


def test_no_replica_in_time_is_503_with_retry_after_and_waiting_is_reported(w: World) -> None:
    response = w.call("GET", "/svc/never/x", token="tok-alice")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "starting" in response.json()["detail"]
    assert "never" in w.services.woken
    wait_for(lambda: any(load.inflight.get(0) == 1 for load in w.services.loads("never")))
    wait_for(lambda: w.services.loads("never")[-1].inflight == {0: 0})


def test_a_client_that_leaves_stops_waiting(w: World) -> None:
    with pytest.raises(httpx.ReadTimeout):
        w.call("GET", "/svc/abandoned/x", token="tok-alice", timeout=0.5)
    wait_for(lambda: any(load.inflight.get(0) == 1 for load in w.services.loads("abandoned")))
    wait_for(lambda: w.services.loads("abandoned")[-1].inflight == {0: 0})


# ---------------------------------------------------------------- streams and WebSockets


def test_server_sent_events_flow_before_the_response_ends(w: World) -> None:
    with httpx.Client(base_url=w.gateway.url, trust_env=False, timeout=30) as client, \
            client.stream("GET", "/svc/pub/sse") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        parts = response.iter_raw()
        first = next(parts)
        assert first == b"data: first\n\n"
        SSE_RELEASE.set()
        rest = first + b"".join(parts)
    assert rest == b"data: first\n\ndata: released\n\n"


def test_websocket_echo_through_a_unix_socket_replica(w: World) -> None:
    with w.ws("/svc/echo/ws?x=1", token="tok-alice") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"
        ws.send("headers?")
        seen = json.loads(ws.recv(timeout=10))
    assert (seen["replica"], seen["raw_path"], seen["query"]) == (11, "/ws", "x=1")
    assert header_values(seen["headers"], "x-forwarded-prefix") == ["/svc/echo"]
    assert header_values(seen["headers"], "authorization") == []
    with pytest.raises(InvalidStatus) as refused:
        w.ws("/svc/echo/ws")
    assert refused.value.response.status_code == 401


# ---------------------------------------------------------------- the balancer alone


class Ticking:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_balancer_ranks_by_inflight_then_draining_then_recent_failure() -> None:
    now = Ticking()
    reports: list[tuple[str, Load]] = []
    balancer = Balancer(lambda n, load: reports.append((n, load)), now=now)
    a, b, c = Replica(1, "a"), Replica(2, "b"), Replica(3, "c", draining=True)

    async def scenario() -> None:
        balancer.enter("s", 1)
        assert balancer.pick("s", (a, b)) == b  # fewer in flight
        balancer.enter("s", 2)
        balancer.enter("s", 2)
        assert balancer.pick("s", (a, b, c)) == a  # c drains
        assert balancer.pick("s", (c,)) == c  # unless only draining ones are left
        balancer.failed(1)
        assert balancer.pick("s", (a, b)) == b
        assert balancer.pick("s", (a, c)) == c  # a failed: even a draining one goes first
        assert balancer.pick("s", (a, b), tried=[2]) == a
        assert balancer.pick("s", (a, b), tried=[1, 2]) == b  # all tried: all again
        now.now += 2.0
        assert not balancer.excluded(1)
        assert balancer.pick("s", (a, b)) == a
        assert balancer.pick("s", ()) is None
        balancer.flush()
        assert reports[-1] == ("s", Load({0: 0, 1: 1, 2: 2}, 0))
        for key in (1, 2, 2):
            balancer.leave("s", key)
            balancer.finish("s")
        balancer.flush()
        assert reports[-1] == ("s", Load({0: 0}, 3))
        count = len(reports)
        balancer.flush()
        assert len(reports) == count  # quiet: nothing more
        await balancer.aclose()

    asyncio.run(scenario())


def test_balancer_ties_go_round_robin() -> None:
    balancer = Balancer(lambda n, load: None)
    a, b = Replica(1, "a"), Replica(2, "b")
    assert [balancer.pick("s", (a, b)) for _ in range(4)] == [a, b, a, b]


def test_quiet_service_gets_a_final_zero_report_by_itself() -> None:
    reports: list[tuple[str, Load]] = []

    async def scenario() -> None:
        balancer = Balancer(lambda n, load: reports.append((n, load)), report_every_s=0.05)
        balancer.enter("s", 7)
        deadline = time.monotonic() + WAIT_S
        while not reports and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert reports[-1] == ("s", Load({0: 0, 7: 1}, 0))
        balancer.leave("s", 7)
        balancer.finish("s")
        while reports[-1][1].inflight != {0: 0} and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert reports[-1] == ("s", Load({0: 0}, 1))
        await balancer.aclose()

    asyncio.run(scenario())



def test_socket_pools_unlisted_for_a_while_are_closed_unless_busy() -> None:
    now = Ticking()

    async def scenario() -> None:
        clients = UdsClients(now, idle_s=60.0)
        idle, busy, listed = clients.get("/a"), clients.get("/b"), clients.get("/c")
        busy.active = 1
        now.now += 61.0
        clients.saw(ServiceTarget("s", "t", False, (Replica(1, "/c"),)))
        for _ in range(100):
            await asyncio.sleep(0)
        assert clients.get("/a") is not idle  # closed, then made anew
        assert clients.get("/b") is busy
        assert clients.get("/c") is listed
        await clients.aclose()

    asyncio.run(scenario())


def test_many_waiters_share_one_wake_and_one_poller() -> None:
    services = FakeServices()
    services.targets["cold"] = ServiceTarget("cold", "t", False, ())
    cached = CachedServices(services, FakeClock())

    async def scenario() -> list[ServiceTarget | None]:
        found = await asyncio.gather(*(cached.until_ready("cold", 0.5) for _ in range(5)))
        await cached.aclose()
        return list(found)

    found = asyncio.run(scenario())
    assert [t.name if t else None for t in found] == ["cold"] * 5
    assert all(t is not None and not t.replicas for t in found)
    assert services.woken == ["cold"]
