"""The notebook gateway (src/gpupool/server/gateway): a real gateway on loopback in front of
a real upstream that echoes what it received, with a fake Directory and a fake clock.

Every way in is tried: Bearer token, session cookie from a one-time ticket, none, someone
else's, a replayed or expired ticket, cross-site writes and WebSockets.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from gateway_fakes import (
    KERNEL_PROTOCOL,
    RELEASE,
    STREAM_ENDED,
    STREAM_FINISHED,
    FakeClock,
    FakeDirectory,
    free_port,
    header_values,
    upstream_app,
)
from gpupool.server.gateway import (
    GatewayServer,
    Target,
    create_gateway,
    load_or_create_key,
    mint_ticket,
    notebook_secret,
    signin_path,
)
from gpupool.server.gateway.headers import (
    downstream_headers,
    strip_gpupool_cookies,
    upstream_headers,
)
from gpupool.server.gateway.sessions import make_session
from gpupool.server.gateway.signing import seal, unseal

KEY = b"k" * 32
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@dataclass
class World:
    gateway: GatewayServer
    directory: FakeDirectory
    clock: FakeClock

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def origin(self) -> str:
        return self.gateway.url

    def call(self, method: str, path: str, *, token: str | None = None,
             cookie: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = cookie
        with httpx.Client(base_url=self.url, trust_env=False, timeout=20) as client:
            return client.request(method, path, headers=headers, **kwargs)

    def echo(self, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.call(kwargs.pop("method", "GET"), path, **kwargs)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def signin(self, nb_id: int, user: str = "alice") -> str:
        """Sign in through a fresh ticket; the ``Cookie`` header value for the session."""
        ticket = mint_ticket(KEY, nb_id, user, self.clock.now)
        response = self.call("GET", signin_path(nb_id, ticket), headers=HTML)
        assert response.status_code == 303, response.text
        return response.headers["set-cookie"].split(";")[0]

    def ws(self, path: str, *, token: str | None = None, cookie: str | None = None,
           origin: str | None = None, subprotocols: list[str] | None = None) -> ClientConnection:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = cookie
        uri = self.url.replace("http://", "ws://") + path
        offered = [Subprotocol(p) for p in subprotocols] if subprotocols else None
        return connect(uri, additional_headers=headers, origin=Origin(origin) if origin else None,
                       subprotocols=offered, proxy=None, open_timeout=10)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    upstream = GatewayServer(upstream_app())
    upstream.start("127.0.0.1", 0)
    directory = FakeDirectory(upstream_port=urlsplit(upstream.url).port or 0,
                              down_port=free_port())
    directory.reset()
    clock = FakeClock()
    port = free_port()
    gateway = GatewayServer(create_gateway(directory, KEY, f"http://127.0.0.1:{port}",
                                           clock=clock))
    gateway.start("127.0.0.1", port)
    try:
        yield World(gateway, directory, clock)
    finally:
        RELEASE.set()
        gateway.stop()
        upstream.stop()


@pytest.fixture
def w(world: World) -> World:
    world.clock.advance(5.0)  # past every cache entry and touch throttle
    world.directory.reset()
    RELEASE.clear()
    STREAM_ENDED.clear()
    STREAM_FINISHED.clear()
    return world


# ---------------------------------------------------------------- the app's own routes


def test_root_and_healthz_answer_json_and_the_rest_is_404(w: World) -> None:
    assert w.call("GET", "/").json() == {"gateway": "gpupool"}
    assert w.call("GET", "/healthz").json() == {"gateway": "gpupool"}
    for path in ("/elsewhere", "/nb/", "/nb/abc/lab", "/svc/x/"):
        response = w.call("GET", path, token="tok-alice")
        assert response.status_code == 404
        assert "detail" in response.json()


def test_bare_notebook_path_redirects_to_the_slash(w: World) -> None:
    response = w.call("GET", "/nb/1?x=1")
    assert response.status_code == 307
    assert response.headers["location"] == "/nb/1/?x=1"


def test_reserved_paths_are_never_forwarded(w: World) -> None:
    response = w.call("GET", "/nb/1/_gpupool/other", token="tok-alice")
    assert response.status_code == 404
    assert "raw_path" not in response.text


# ---------------------------------------------------------------- forwarding


def test_path_and_query_reach_upstream_unchanged_with_the_notebook_token(w: World) -> None:
    path = "/nb/1/api/contents/a%20b%2Fc.ipynb?content=1&x=%2F&y=a+b"
    seen = w.echo(path, token="tok-alice")
    assert seen["raw_path"] == "/nb/1/api/contents/a%20b%2Fc.ipynb"
    assert seen["query"] == "content=1&x=%2F&y=a+b"
    assert header_values(seen["headers"], "authorization") == ["token secret-1"]
    assert header_values(seen["headers"], "host") == [f"127.0.0.1:{w.directory.upstream_port}"]
    assert header_values(seen["headers"], "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(seen["headers"], "x-forwarded-proto") == ["http"]
    assert "tok-alice" not in json.dumps(seen)


def test_client_forwarding_headers_are_replaced_not_trusted(w: World) -> None:
    seen = w.echo("/nb/1/api/status", token="tok-alice",
                  headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"})
    assert "6.6.6.6" not in json.dumps(seen)


def test_cookie_request_forwards_other_cookies_but_never_gpupool_ones(w: World) -> None:
    session = w.signin(1)
    other = w.signin(2)
    seen = w.echo("/nb/1/api/status", cookie=f"_xsrf=abc; {session}; theme=dark; {other}")
    assert header_values(seen["headers"], "cookie") == ["_xsrf=abc; theme=dark"]
    assert header_values(seen["headers"], "authorization") == ["token secret-1"]
    assert "gpupool_" not in json.dumps(seen)


def test_request_body_is_forwarded_whole(w: World) -> None:
    body = os.urandom(3 * 1024 * 1024)
    seen = w.echo("/nb/1/api/contents/big.bin", method="PUT", token="tok-alice", content=body)
    assert seen["method"] == "PUT"
    assert seen["body_len"] == len(body)

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked upload
        yield b"hello "
        yield b"world"

    seen = w.echo("/nb/1/upload", method="POST", token="tok-alice", content=chunks())
    assert (seen["body_len"], seen["body_head"]) == (11, "hello world")


def test_response_streams_before_upstream_finishes(w: World) -> None:
    """The upstream sends its last chunk only after the client has seen the first one: a
    buffering gateway would deliver "timed-out" instead."""
    headers = {"Authorization": "Bearer tok-alice"}
    with httpx.Client(base_url=w.url, trust_env=False, timeout=30) as client, \
            client.stream("GET", "/nb/1/stream", headers=headers) as response:
        assert response.status_code == 200
        parts = response.iter_raw()
        first = next(parts)
        assert first.startswith(b"first\n")
        RELEASE.set()
        rest = first + b"".join(parts)
    assert rest == b"first\nreleased\n"


def test_client_leaving_a_stream_closes_the_upstream_stream(w: World) -> None:
    """An abandoned server-sent-events stream must not keep its upstream request open."""
    headers = {"Authorization": "Bearer tok-alice"}
    with httpx.Client(base_url=w.url, trust_env=False, timeout=30) as client, \
            client.stream("GET", "/nb/1/stream", headers=headers) as response:
        assert next(response.iter_raw()).startswith(b"first\n")
    assert STREAM_ENDED.wait(15.0)
    assert not STREAM_FINISHED.is_set()


def test_repeated_set_cookie_headers_survive(w: World) -> None:
    response = w.call("GET", "/nb/1/cookies", token="tok-alice")
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_absolute_upstream_location_becomes_a_path(w: World) -> None:
    response = w.call("GET", "/nb/1/away", token="tok-alice")
    assert response.status_code == 302
    assert response.headers["location"] == "/nb/1/lab"


def test_upstream_down_is_502(w: World) -> None:
    response = w.call("GET", "/nb/4/lab", token="tok-alice")
    assert response.status_code == 502
    assert "not answering" in response.json()["detail"]
    with pytest.raises(InvalidStatus) as refused:
        w.ws("/nb/4/ws", token="tok-alice")
    assert refused.value.response.status_code == 502


def test_activity_is_touched(w: World) -> None:
    w.echo("/nb/1/api/status", token="tok-alice")
    assert w.directory.touched == [(1, w.clock.now)]
    with w.ws("/nb/1/ws", token="tok-alice") as ws:
        w.clock.advance(2.0)
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
    assert (1, w.clock.now) in w.directory.touched


# ---------------------------------------------------------------- WebSockets


def test_websocket_relays_text_binary_and_the_chosen_subprotocol(w: World) -> None:
    with w.ws("/nb/1/ws?session_id=s1", token="tok-alice",
              subprotocols=["other", KERNEL_PROTOCOL]) as ws:
        assert ws.subprotocol == KERNEL_PROTOCOL
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=10) == b"\x00\x01\xff"
        ws.send("headers?")
        seen = json.loads(ws.recv(timeout=10))
    assert seen["raw_path"] == "/nb/1/ws"
    assert seen["query"] == "session_id=s1"
    upstream = f"127.0.0.1:{w.directory.upstream_port}"
    assert header_values(seen["headers"], "authorization") == ["token secret-1"]
    assert header_values(seen["headers"], "origin") == [f"http://{upstream}"]
    assert header_values(seen["headers"], "host") == [upstream]
    assert "tok-alice" not in json.dumps(seen)


def test_websocket_close_code_comes_through(w: World) -> None:
    with w.ws("/nb/1/ws", token="tok-alice") as ws:
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


def test_cookie_websocket_needs_the_gateways_origin(w: World) -> None:
    session = w.signin(1)
    with pytest.raises(InvalidStatus) as refused:
        w.ws("/nb/1/ws", cookie=session, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        w.ws("/nb/1/ws", cookie=session)
    assert refused.value.response.status_code == 403
    with w.ws("/nb/1/ws", cookie=session, origin=w.origin) as ws:
        ws.send("ok")
        assert ws.recv(timeout=10) == "ok"


def test_websocket_without_credential_or_for_others_is_refused(w: World) -> None:
    for token, status in ((None, 401), ("tok-bob", 404), ("tok-carol", 404), ("nope", 401)):
        with pytest.raises(InvalidStatus) as refused:
            w.ws("/nb/1/ws", token=token)
        assert refused.value.response.status_code == status, token


# ---------------------------------------------------------------- who may enter


def test_no_credential_is_401_json_for_programs_and_html_for_browsers(w: World) -> None:
    api = w.call("GET", "/nb/1/api/status", headers={"Accept": "application/json"})
    assert api.status_code == 401
    assert "detail" in api.json()
    post = w.call("POST", "/nb/1/api/sessions", headers=HTML)
    assert post.status_code == 401 and "detail" in post.json()
    page = w.call("GET", "/nb/1/lab", headers=HTML)
    assert page.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    assert "gpupool notebook open" in page.text
    assert "location" not in page.headers


def test_jupyters_own_authorization_header_is_ignored_and_not_forwarded(w: World) -> None:
    """JupyterLab's page may send ``Authorization: token ...``: the cookie decides, and the
    upstream gets the notebook's token only."""
    session = w.signin(1)
    seen = w.echo("/nb/1/api/status", cookie=session,
                  headers={"Authorization": "token from-the-page"})
    assert header_values(seen["headers"], "authorization") == ["token secret-1"]


def test_bad_bearer_token_is_401_even_with_a_cookie(w: World) -> None:
    session = w.signin(1)
    response = w.call("GET", "/nb/1/api/status", token="forged", cookie=session)
    assert response.status_code == 401


def test_only_the_owner_or_an_admin_gets_in(w: World) -> None:
    unknown = w.call("GET", "/nb/99/api/status", token="tok-alice")
    foreign = w.call("GET", "/nb/1/api/status", token="tok-bob")
    teammate = w.call("GET", "/nb/1/api/status", token="tok-carol")
    assert unknown.status_code == foreign.status_code == teammate.status_code == 404
    assert foreign.json()["detail"] == "no notebook 1"
    assert unknown.json()["detail"] == "no notebook 99"
    seen = w.echo("/nb/1/api/status", token="tok-root")
    assert header_values(seen["headers"], "authorization") == ["token secret-1"]


def test_revoked_token_stops_working_within_the_cache_window(w: World) -> None:
    assert w.call("GET", "/nb/1/api/status", token="tok-alice").status_code == 200
    del w.directory.tokens["tok-alice"]
    w.clock.advance(0.5)  # still inside the 1 s cache
    assert w.call("GET", "/nb/1/api/status", token="tok-alice").status_code == 200
    w.clock.advance(0.5)  # 1 s after the lookup: asked again
    assert w.call("GET", "/nb/1/api/status", token="tok-alice").status_code == 401


def test_disabled_user_loses_their_cookie_session(w: World) -> None:
    session = w.signin(1)
    assert w.call("GET", "/nb/1/api/status", cookie=session).status_code == 200
    w.directory.disabled.add("alice")
    w.clock.advance(1.0)
    assert w.call("GET", "/nb/1/api/status", cookie=session).status_code == 401


def test_ownership_change_is_seen_within_the_cache_window(w: World) -> None:
    assert w.call("GET", "/nb/1/api/status", token="tok-alice").status_code == 200
    old = w.directory.notebooks[1]
    w.directory.notebooks[1] = Target(1, "bob", "team-b", "ready", old.host, old.port, "s")
    w.clock.advance(1.0)
    assert w.call("GET", "/nb/1/api/status", token="tok-alice").status_code == 404


# ---------------------------------------------------------------- tickets and cookies


def test_ticket_signin_sets_a_scoped_cookie_and_redirects(w: World) -> None:
    ticket = mint_ticket(KEY, 1, "alice", w.clock.now)
    response = w.call("GET", signin_path(1, ticket), headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == "/nb/1/lab"
    cookie = response.headers["set-cookie"]
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith("gpupool_nb_1=")
    assert {"HttpOnly", "SameSite=Lax", "Path=/nb/1/"} <= set(attributes)
    assert "Secure" not in attributes  # the public URL is http
    seen = w.echo("/nb/1/lab", cookie=attributes[0], headers=HTML)
    assert seen["raw_path"] == "/nb/1/lab"
    again = w.call("GET", signin_path(1, ticket), headers=HTML)
    assert again.status_code == 401
    assert again.headers["content-type"].startswith("text/html")
    assert "set-cookie" not in again.headers


def test_expired_forged_or_foreign_tickets_are_refused(w: World) -> None:
    old = mint_ticket(KEY, 1, "alice", w.clock.now - 61)
    forged = mint_ticket(b"x" * 32, 1, "alice", w.clock.now)
    for_one = mint_ticket(KEY, 1, "alice", w.clock.now)
    assert w.call("GET", signin_path(1, old)).status_code == 401
    assert w.call("GET", signin_path(1, forged)).status_code == 401
    assert w.call("GET", signin_path(2, for_one)).status_code == 401
    assert w.call("GET", "/nb/1/_gpupool/signin").status_code == 401
    assert w.call("GET", signin_path(1, for_one)).status_code == 303  # unused so far


def test_ticket_for_a_disabled_user_sets_no_cookie(w: World) -> None:
    w.directory.disabled.add("alice")
    response = w.call("GET", signin_path(1, mint_ticket(KEY, 1, "alice", w.clock.now)))
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


def test_a_cookie_opens_only_the_notebook_it_names(w: World) -> None:
    value = w.signin(1).split("=", 1)[1]
    response = w.call("GET", "/nb/2/api/status", cookie=f"gpupool_nb_2={value}")
    assert response.status_code == 401
    forged = make_session(b"x" * 32, 1, "alice", w.clock.now)
    assert w.call("GET", "/nb/1/api/status", cookie=f"gpupool_nb_1={forged}").status_code == 401


def test_a_cookie_expires_after_12_hours(w: World) -> None:
    session = w.signin(1)
    w.clock.advance(12 * 3600 - 10)
    assert w.call("GET", "/nb/1/api/status", cookie=session).status_code == 200
    w.clock.advance(20)
    assert w.call("GET", "/nb/1/api/status", cookie=session).status_code == 401


def test_a_cookie_is_no_use_to_someone_who_may_not_enter(w: World) -> None:
    session = w.signin(1, user="carol")  # a ticket the API should not mint, but if it did
    assert w.call("GET", "/nb/1/api/status", cookie=session).status_code == 404


def test_https_public_url_makes_the_cookie_secure() -> None:
    directory = FakeDirectory()
    directory.reset()
    clock = FakeClock()
    app = create_gateway(directory, KEY, "https://gpu.example:8471", clock=clock)
    client = TestClient(app, base_url="https://gpu.example:8471", follow_redirects=False)
    response = client.get(signin_path(1, mint_ticket(KEY, 1, "alice", clock.now)))
    assert response.status_code == 303
    assert "Secure" in [p.strip() for p in response.headers["set-cookie"].split(";")]


# ---------------------------------------------------------------- cross-site requests


def test_cookie_writes_need_the_gateways_origin(w: World) -> None:
    session = w.signin(1)
    missing = w.call("POST", "/nb/1/api/sessions", cookie=session, content=b"{}")
    assert missing.status_code == 403
    evil = w.call("DELETE", "/nb/1/api/sessions/x", cookie=session,
                  headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    ok = w.echo("/nb/1/api/sessions", method="POST", cookie=session, content=b"{}",
                headers={"Origin": w.origin, "Referer": f"{w.origin}/nb/1/lab"})
    upstream = f"http://127.0.0.1:{w.directory.upstream_port}"
    assert header_values(ok["headers"], "origin") == [upstream]
    assert header_values(ok["headers"], "referer") == [f"{upstream}/nb/1/lab"]


def test_host_origin_counts_only_when_it_matches_host_exactly(w: World) -> None:
    session = w.signin(1)
    port = urlsplit(w.url).port
    same = w.call("POST", "/nb/1/api/x", cookie=session,
                  headers={"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"})
    assert same.status_code == 200
    other = w.call("POST", "/nb/1/api/x", cookie=session,
                   headers={"Origin": f"http://localhost:{port}"})
    assert other.status_code == 403


def test_token_writes_need_no_origin(w: World) -> None:
    seen = w.echo("/nb/1/api/sessions", method="POST", token="tok-alice", content=b"{}")
    assert seen["method"] == "POST"


# ---------------------------------------------------------------- notebooks not running


def test_suspended_notebook_is_resumed_by_its_owners_browser(w: World) -> None:
    page = w.call("GET", "/nb/3/lab", token="tok-alice", headers=HTML)
    assert page.status_code == 503
    assert page.headers["retry-after"] == "5"
    assert 'http-equiv="refresh" content="3"' in page.text
    assert "kernels restart after a suspend" in page.text
    assert w.directory.resumed == [(3, "alice")]


def test_polling_admins_and_writes_do_not_resume(w: World) -> None:
    api = w.call("GET", "/nb/3/api/kernels", token="tok-alice")
    assert api.status_code == 503 and "detail" in api.json()
    assert api.headers["retry-after"] == "5"
    post = w.call("POST", "/nb/3/api/sessions", token="tok-alice", headers=HTML)
    assert post.status_code == 503 and "detail" in post.json()
    admin = w.call("GET", "/nb/3/lab", token="tok-root", headers=HTML)
    assert admin.status_code == 503
    with pytest.raises(InvalidStatus) as refused:
        w.ws("/nb/3/ws", token="tok-alice")
    assert refused.value.response.status_code == 503
    assert w.directory.resumed == []


def test_starting_notebook_waits_without_resuming(w: World) -> None:
    page = w.call("GET", "/nb/5/lab", token="tok-alice", headers=HTML)
    assert page.status_code == 503
    assert page.headers["retry-after"] == "5"
    assert w.directory.resumed == []


# ---------------------------------------------------------------- pieces


def test_key_is_created_private_and_reused(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "home")
    path = tmp_path / "home" / "gateway.key"
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "home") == key
    assert [p.name for p in path.parent.iterdir()] == ["gateway.key"]
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match=r"gateway\.key"):
        load_or_create_key(tmp_path / "home")


def test_notebook_secret_is_deterministic_per_attempt() -> None:
    secret = notebook_secret(KEY, 7, 1)
    assert secret == notebook_secret(KEY, 7, 1)
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert secret not in {notebook_secret(KEY, 7, 2), notebook_secret(KEY, 8, 1),
                          notebook_secret(b"o" * 32, 7, 1)}


def test_sealed_tokens_resist_tampering_and_purpose_swaps() -> None:
    token = seal(KEY, "a", {"u": "alice"})
    assert unseal(KEY, "a", token) == {"u": "alice"}
    assert unseal(KEY, "b", token) is None
    body, mac = token.split(".")
    assert unseal(KEY, "a", f"{body}x.{mac}") is None
    assert unseal(KEY, "a", "garbage") is None
    assert unseal(KEY, "a", "a.b.c") is None
    assert unseal(KEY, "a", "!!.??") is None


def test_upstream_headers_drop_hop_by_hop_and_credentials() -> None:
    target = Target(1, "alice", "team-a", "ready", "10.0.0.5", 9000, "s3cret")
    client = [("Connection", "keep-alive, X-Private"), ("X-Private", "1"),
              ("Keep-Alive", "5"), ("Authorization", "Bearer tok"), ("Host", "gw:8471"),
              ("Cookie", "gpupool_nb_1=v; _xsrf=x"), ("Accept", "*/*"),
              ("Proxy-Authorization", "Basic x")]
    out = upstream_headers(client, target, client_ip="1.2.3.4", proto="https",
                           own_origins={"http://gw:8471"})
    names = [k.lower() for k, _ in out]
    assert "x-private" not in names and "keep-alive" not in names
    assert "connection" not in names and "proxy-authorization" not in names
    assert dict((k.lower(), v) for k, v in out) == {
        "accept": "*/*", "host": "10.0.0.5:9000", "authorization": "token s3cret",
        "cookie": "_xsrf=x", "x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https",
        "x-forwarded-host": "gw:8471"}
    assert strip_gpupool_cookies("gpupool_nb_3=a;b=1;  gpupool_x=2") == "b=1"


def test_downstream_headers_keep_cookies_but_not_gpupool_ones() -> None:
    target = Target(1, "alice", "team-a", "ready", "10.0.0.5", 9000, "s3cret")
    upstream = [(b"Set-Cookie", b"_xsrf=1; Path=/nb/1/"), (b"Transfer-Encoding", b"chunked"),
                (b"Set-Cookie", b"gpupool_nb_2=planted; Path=/nb/2/"),
                (b"Set-Cookie", b"b=2"), (b"Location", b"http://10.0.0.5:9000/nb/1/tree")]
    assert downstream_headers(upstream, target) == [
        (b"Set-Cookie", b"_xsrf=1; Path=/nb/1/"), (b"Set-Cookie", b"b=2"),
        (b"Location", b"/nb/1/tree")]


def test_taken_port_is_a_clear_oserror(w: World) -> None:
    port = urlsplit(w.url).port or 0
    with pytest.raises(OSError, match=f"can't listen on 127.0.0.1:{port}"):
        GatewayServer(upstream_app()).start("127.0.0.1", port)


def test_the_listening_socket_is_tcp_so_answers_are_not_held_back_by_nagle() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket's
    protocol is TCP (0 left Nagle on: +44 ms per kept-alive request, bench/results)."""
    import socket

    from gpupool.server.gateway.serve import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
