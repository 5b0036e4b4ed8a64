"""Pipeline HTTP steps cannot reach into the server's machine: loopback, link-local,
unspecified and the server's own addresses are refused (also behind a DNS name, also when
only one of its addresses is bad) unless GPUPOOL_HTTP_ALLOW_HOSTS lists them; the request goes
to the address that was checked, and redirects are not followed. The last tests run a user's
pipeline against a real server without an allow list."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gpupool.schemas.pipelines import StepSpec
from gpupool.server.pipelines.http_guard import HttpGuard, IPAddress, RefusedUrl, allow_list
from gpupool.server.pipelines.step_http import RESULT_FILE, HttpSteps
from gpupool.server.pipelines.steps import Attempt
from gpupool.server.services.identity import Principal
from pipeline_helpers import finished, start, steps
from server_harness import Server, make_server

ALLOW = "an admin may allow it with GPUPOOL_HTTP_ALLOW_HOSTS"
NAMES = {
    "public.test": ["192.0.2.10"],
    "two.test": ["192.0.2.10", "2001:db8::10"],
    "rebind.test": ["192.0.2.10", "127.0.0.1"],  # one good, one bad address: refused
    "metadata.test": ["169.254.169.254"],
    "internal.test": ["127.0.0.5"],
}


def fake_resolver(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if host not in NAMES:
        raise OSError(f"[Errno -2] Name or service not known: {host}")
    return NAMES[host]


def guard(allow: str = "", server_host: str = "127.0.0.1",
          local: tuple[str, ...] = ()) -> HttpGuard:
    def is_local(address: IPAddress) -> bool:
        return str(address) in local

    return HttpGuard(frozenset(allow_list(allow)), server_host, fake_resolver, is_local)


@pytest.mark.parametrize(("url", "refusal"), [
    ("http://127.0.0.1:8470/healthz", "127.0.0.1 is a loopback address"),
    ("http://127.9.9.9/", "127.9.9.9 is a loopback address"),
    ("http://[::1]:80/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("https://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://0.0.0.0:8470/", "0.0.0.0 is an unspecified address"),
    ("http://[::]/", ":: is an unspecified address"),
    ("http://metadata.test/", "metadata.test resolves to 169.254.169.254, a link-local address"),
    ("http://rebind.test/", "rebind.test resolves to 127.0.0.1, a loopback address"),
    ("ftp://public.test/", "'ftp://public.test/' is not an http:// or https:// URL"),
    ("http://nowhere.test/", "cannot resolve the host nowhere.test"),
    ("http://public.test/", None),
    ("https://two.test:8443/x", None),
])
def test_the_default_guard(url: str, refusal: str | None) -> None:
    if refusal is None:
        assert guard().check(url).addresses == tuple(fake_resolver(url.split("/")[2]
                                                                   .split(":")[0], 0))
        return
    with pytest.raises(RefusedUrl) as info:
        guard().check(url)
    assert str(info.value).startswith(refusal)
    if "address" in refusal:
        assert str(info.value).endswith(ALLOW)


def test_the_servers_own_address_is_refused_on_any_port() -> None:
    with pytest.raises(RefusedUrl, match=r"^192\.0\.2\.7 is an address of this gpupool server"):
        guard(server_host="192.0.2.7").check("http://192.0.2.7:22/")
    guard(server_host="192.0.2.7").check("http://192.0.2.10/")  # another machine
    # Listening on 0.0.0.0 is listening on every address of the machine.
    everywhere = guard(server_host="0.0.0.0", local=("192.0.2.10",))
    with pytest.raises(RefusedUrl, match=r"public\.test resolves to 192\.0\.2\.10, an address of"):
        everywhere.check("http://public.test/")


def test_the_allow_list_is_the_admins_way_around() -> None:
    allowed = guard(allow=" 127.0.0.1, Internal.TEST ,[::1]")
    assert allowed.check("http://127.0.0.1:9/").addresses == ("127.0.0.1",)
    assert allowed.check("http://internal.test/").addresses == ("127.0.0.5",)
    assert allowed.check("http://[::1]/").addresses == ("::1",)
    with pytest.raises(RefusedUrl, match=r"127\.0\.0\.2 is a loopback"):
        allowed.check("http://127.0.0.2/")
    with pytest.raises(RefusedUrl, match="link-local"):
        allowed.check("http://169.254.169.254/")


def test_the_target_keeps_the_name_for_host_header_and_tls() -> None:
    target = guard().check("https://two.test:8443/a?b=1")
    assert str(target.url_for("2001:db8::10")) == "https://[2001:db8::10]:8443/a?b=1"
    assert target.headers({"X": "1"}) == {"Host": "two.test:8443", "X": "1"}
    assert target.headers({"host": "given"}) == {"host": "given"}
    assert target.extensions == {"sni_hostname": "two.test"}
    assert guard().check("http://public.test/").extensions == {}


class Answer(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "host": self.headers["Host"]})
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Answer.seen.clear()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def call(tmp_path: Path, http_guard: HttpGuard, url: str) -> dict[str, Any]:
    """Run one http step attempt in this process; its result.json."""
    spec = StepSpec.model_validate({"name": "x", "http": {"url": url}})
    request = spec.http.model_dump(mode="json") if spec.http else {}
    attempt = Attempt(1, "r", spec, 1, tmp_path, Principal(1, "u", 1, "t", False), http=request)
    executor = HttpSteps(lambda _team, _names: {}, http_guard)
    executor._call(attempt, executor.create(attempt))
    result: dict[str, Any] = json.loads((tmp_path / RESULT_FILE).read_text())
    return result


def test_the_request_goes_to_the_checked_address(tmp_path: Path, http_server: int) -> None:
    # "svc.test" exists only in the guard's resolver: reaching the server proves the request
    # went to the address that was checked, not to a second DNS answer.
    names = {"svc.test": ["127.0.0.1"]}
    pinned = HttpGuard(frozenset({"127.0.0.1"}), resolver=lambda host, _port: names[host])
    result = call(tmp_path, pinned, f"http://svc.test:{http_server}/hello")
    assert result == {"status": 200, "body": "hello"}
    assert Answer.seen == [{"path": "/hello", "host": f"svc.test:{http_server}"}]


def test_redirects_are_not_followed(tmp_path: Path, http_server: int) -> None:
    allowed = HttpGuard(frozenset({"127.0.0.1"}))
    result = call(tmp_path, allowed, f"http://127.0.0.1:{http_server}/redirect")
    assert result["status"] == 302 and len(Answer.seen) == 1


def test_a_refused_url_fails_the_step_before_any_request(tmp_path: Path,
                                                         http_server: int) -> None:
    result = call(tmp_path, HttpGuard(), f"http://127.0.0.1:{http_server}/hello")
    assert result == {"kind": "error", "error": f"http step 'x': 127.0.0.1 is a loopback "
                      f"address; {ALLOW}"}
    assert Answer.seen == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("guard"), "1xA100-80GB",
                           {"GPUPOOL_HTTP_ALLOW_HOSTS": ""})


def test_a_users_pipeline_cannot_call_loopback_or_link_local(server: Server,
                                                            http_server: int) -> None:
    definition = {"name": "probe", "steps": [
        {"name": "local", "http": {"url": f"http://127.0.0.1:{http_server}/hello"},
         "allow_failure": True},
        {"name": "api", "http": {"url": f"{server.url}/healthz"}, "allow_failure": True},
        {"name": "metadata", "http": {"url": "http://169.254.169.254/latest/meta-data/"},
         "allow_failure": True},
    ]}
    with server.client() as c:
        c.post("/users", json={"name": "mallory", "team": "default", "unix_user": "root"})
        token = c.post("/tokens", json={"user": "mallory"}).json()["token"]
    with server.client(token) as c:
        by = steps(finished(c, start(c, definition)))
    assert by["local"]["state"] == "failed"
    assert (f"http step 'local': 127.0.0.1 is a loopback address; {ALLOW}"
            in by["local"]["message"])
    assert f"http step 'api': 127.0.0.1 is a loopback address; {ALLOW}" in by["api"]["message"]
    assert by["metadata"]["state"] == "failed"
    assert (f"http step 'metadata': 169.254.169.254 is a link-local address; {ALLOW}"
            in by["metadata"]["message"])
    assert Answer.seen == []
