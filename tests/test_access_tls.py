"""How a real `gpupool up` may be reached: `--host` binds that address only, `--tls-cert` /
`--tls-key` serve HTTPS (server.json and the start line say https), the SDK and the CLI trust
a self-signed certificate only when told (verify=, GPUPOOL_CA_FILE) and otherwise fail with
one line naming the URL, and bad TLS options stop `up` before it starts. Everything binds to
the loopback range; the clear-text warning for other hosts is tested on its function."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpupool.cli.up_access import AccessError, clear_text_warning, is_loopback, tls_files
from gpupool.sdk import ApiError, AsyncClient, Client, ConfigError
from server_harness import Server, running
from tls_certs import self_signed


def gpupool(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def started(server: Server) -> Iterator[Server]:
    with running(server) as srv:
        yield srv


@pytest.fixture(scope="module")
def other_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("host") / "home"
    yield from started(Server(home, "", "1xA100-80GB", host="127.0.0.2"))


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), ("localhost",), ("127.0.0.1",))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, cert: tuple[Path, Path]) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("https") / "home"
    yield from started(Server(home, "", "1xA100-80GB", tls_cert=str(cert[0]),
                              tls_key=str(cert[1])))


def test_host_serves_on_that_address_only(other_host: Server) -> None:
    assert other_host.url.startswith("http://127.0.0.2:")
    assert httpx.get(f"{other_host.url}/healthz", timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{other_host.port}/healthz", timeout=5)
    server_json = json.loads((other_host.home / "server.json").read_text())
    assert server_json["url"] == other_host.url
    printed = (other_host.home / "server.out").read_text()
    assert f"gpupool {other_host.url}" in printed
    assert "warning" not in printed  # a loopback address: nothing travels over a network


def test_tls_serves_https_and_says_so(tls: Server) -> None:
    assert tls.url.startswith("https://127.0.0.1:")
    assert json.loads((tls.home / "server.json").read_text())["url"] == tls.url
    assert f"gpupool {tls.url}" in (tls.home / "server.out").read_text()
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
        httpx.get(f"http://127.0.0.1:{tls.port}/healthz", timeout=5)


def test_the_sdk_trusts_the_certificate_only_when_told(
    tls: Server, cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPUPOOL_CA_FILE", raising=False)
    with Client(tls.url, tls.token, verify=cert[0]) as gp:
        assert gp.whoami().user == "admin"
    with Client(tls.url, tls.token) as gp, pytest.raises(ApiError) as info:
        gp.whoami()
    message = info.value.message
    assert info.value.status == 0 and "\n" not in message
    assert message.startswith(
        f"cannot verify the TLS certificate of the gpupool server at {tls.url}: ")
    assert message.endswith("set GPUPOOL_CA_FILE to its CA file")
    monkeypatch.setenv("GPUPOOL_CA_FILE", str(cert[0]))
    with Client(tls.url, tls.token) as gp:
        assert gp.whoami().user == "admin"

    async def async_whoami() -> str:
        async with AsyncClient(tls.url, tls.token) as agp:
            return (await agp.whoami()).user

    assert asyncio.run(async_whoami()) == "admin"


def test_the_sdk_names_a_bad_ca_file_and_a_wrong_scheme(
    tls: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUPOOL_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"^GPUPOOL_CA_FILE: cannot use .*missing\.pem as the "
                       r"CA file: no such file"):
        Client(tls.url, tls.token)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigError, match="not a PEM file of CA certificates"):
        Client(tls.url, tls.token, verify=not_pem)
    plain = f"http://127.0.0.1:{tls.port}"
    with Client(plain, tls.token, verify=False) as gp, pytest.raises(ApiError) as info:
        gp.whoami()
    assert info.value.message.startswith(f"cannot reach the gpupool server at {plain}")
    assert info.value.message.endswith("(a server started with --tls-cert needs an https:// URL)")


def test_https_to_a_plain_server_says_so(other_host: Server) -> None:
    url = f"https://127.0.0.2:{other_host.port}"
    with Client(url, other_host.token, verify=False) as gp, pytest.raises(ApiError) as info:
        gp.whoami()
    assert info.value.message.startswith(f"TLS with the gpupool server at {url} failed: ")
    assert "a server without --tls-cert needs an http:// URL" in info.value.message


def test_the_cli_uses_gpupool_ca_file(tls: Server, cert: tuple[Path, Path]) -> None:
    env = dict(tls.env)  # GPUPOOL_URL (https), GPUPOOL_TOKEN
    env.pop("GPUPOOL_CA_FILE", None)
    refused = gpupool("ps", env=env)
    assert refused.returncode == 3
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot verify the TLS certificate" in lines[0]
    assert tls.url in lines[0] and "GPUPOOL_CA_FILE" in lines[0]
    env["GPUPOOL_CA_FILE"] = str(cert[0])
    done = gpupool("ps", env=env)
    assert done.returncode == 0, done.stderr
    # Found through server.json alone (no GPUPOOL_URL): it names the https URL.
    env.pop("GPUPOOL_URL")
    env.pop("GPUPOOL_TOKEN")
    found = gpupool("nodes", env=env)
    assert found.returncode == 0, found.stderr
    assert "A100" in found.stdout


def test_bad_tls_options_stop_up_before_it_starts(tmp_path: Path,
                                                  cert: tuple[Path, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env["GPUPOOL_HOME"] = str(tmp_path / "home")
    other_key = self_signed(tmp_path / "other")[1]
    cases = [
        (["--tls-cert", str(cert[0])],
         "--tls-cert (or $GPUPOOL_TLS_CERT) needs --tls-key (or $GPUPOOL_TLS_KEY) too"),
        (["--tls-cert", str(cert[0]), "--tls-key", str(tmp_path / "nope.pem")],
         f"--tls-key {tmp_path / 'nope.pem'}: no such file"),
        (["--tls-cert", str(cert[0]), "--tls-key", str(other_key)],
         "cannot load them"),
    ]
    for args, expected in cases:
        result = gpupool("up", "--port", "1", *args, env=env)
        assert result.returncode == 2, result.stderr
        assert expected in " ".join(result.stderr.split()), result.stderr
    assert not (tmp_path / "home" / "server.json").exists()


def test_tls_files_checks_the_pair(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    assert tls_files("", "") == ("", "")
    assert tls_files(str(cert[0]), str(cert[1])) == (str(cert[0]), str(cert[1]))
    with pytest.raises(AccessError, match=r"--tls-key .* needs --tls-cert"):
        tls_files("", str(cert[1]))
    with pytest.raises(AccessError, match="a directory"):
        tls_files(str(tmp_path), str(cert[1]))


@pytest.mark.parametrize(("host", "tls", "warns"), [
    ("127.0.0.1", False, False),
    ("127.0.0.2", False, False),
    ("::1", False, False),
    ("localhost", False, False),
    ("0.0.0.0", False, True),
    ("::", False, True),
    ("192.0.2.5", False, True),
    ("0.0.0.0", True, False),
    ("192.0.2.5", True, False),
])
def test_the_clear_text_warning(host: str, tls: bool, warns: bool) -> None:
    warning = clear_text_warning(host, tls)
    assert (warning is not None) == warns
    if warning is not None:
        assert warning.startswith(f"warning: listening on {host} without TLS")
        assert "clear text" in warning and "--tls-cert" in warning
    assert is_loopback(host) == (host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
