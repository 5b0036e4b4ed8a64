"""Images from a registry that wants a login: Debian's docker-registry on loopback (htpasswd,
plain HTTP, named in GPUPOOL_IMAGE_INSECURE_REGISTRIES) holds an image built here. A team
that stored its login (``gpupool registry login``) runs a job in it; another team, without
one, cannot, even once the image is on the node (pull policy ``always``: podman asks the
registry every time). The login never appears in the job's spec, its environment or its
container. Skipped, saying why, without podman, runc, busybox-static, docker-registry or
htpasswd (apache2-utils)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

import image_builder
from gpupool.executors.containers import podman_env
from server_harness import Server, free_port, new_user, running, wait_for

PASSWORD = "reg-" + uuid.uuid4().hex[:10]


def _missing() -> str | None:
    why = image_builder.missing()
    if why is None and shutil.which("docker-registry") is None:
        why = "docker-registry is not installed (apt-get install docker-registry)"
    if why is None and shutil.which("htpasswd") is None:
        why = "htpasswd is not installed (apt-get install apache2-utils)"
    return why


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(host:port, image) of a registry holding the test image, pushed with a login."""
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    host = f"127.0.0.1:{port}"
    subprocess.run(["htpasswd", "-Bbc", str(root / "htpasswd"), "alice", PASSWORD],
                   check=True, capture_output=True)
    (root / "config.yml").write_text(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: " + str(root / "data")
        + f"\nhttp:\n  addr: {host}\nauth:\n  htpasswd:\n    realm: test\n    path: "
        + str(root / "htpasswd") + "\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(host), timeout=30)
        local = image_builder.build(root)
        image = f"{host}/team/busy:1"
        env = podman_env(str(root / "containers.conf"))
        subprocess.run(["podman", "tag", local, image], env=env, check=True, capture_output=True)
        subprocess.run(["podman", "push", "--tls-verify=false", "--creds",
                        f"alice:{PASSWORD}", image], env=env, check=True, capture_output=True,
                       timeout=120)
        subprocess.run(["podman", "rmi", image], env=env, check=True, capture_output=True)
        yield host, image
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(host: str) -> bool:
    try:
        return httpx.get(f"http://{host}/v2/", timeout=1).status_code == 401
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def server(registry: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("regsrv") / "home"
    with running(Server(home, "", "2xA100-80GB", isolated=True, extra_env={
            "GPUPOOL_IMAGE_PULL": "always", "GPUPOOL_IMAGE_INSECURE_REGISTRIES": registry[0],
            "GPUPOOL_IMAGE_NETWORK": "none"})) as srv:
        yield srv


def run_in(server: Server, token: str, image: str) -> tuple[str, str]:
    """(phase, log) of a job in ``image`` run by ``token``'s user."""
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        made = c.post("/jobs", json={"command": ["sh", "-c", "head -1 /etc/os-release; env"],
                                     "image": image})
        assert made.status_code == 201, made.text
        job = made.json()["id"]
        view = wait_for(lambda: (v := c.get(f"/jobs/{job}").json())["phase"] in
                        ("succeeded", "failed") and v, timeout=120)
        return str(view["phase"]), str(c.get(f"/jobs/{job}/logs").json()["data"])


def test_a_teams_login_pulls_its_image_and_another_team_gets_nothing(
        server: Server, registry: tuple[str, str]) -> None:
    host, image = registry
    tag = uuid.uuid4().hex[:6]
    with server.client() as admin:
        owner, _ = new_user(admin, f"ra{tag}")
        stranger, _ = new_user(admin, f"rb{tag}")
    refused = run_in(server, owner, image)  # no login yet
    assert refused[0] == "failed" and "authentication required" in refused[1], refused[1]
    login = subprocess.run(
        [sys.executable, "-m", "gpupool.cli.main", "registry", "login", host, "-u", "alice",
         "--password-stdin"], input=PASSWORD + "\n", capture_output=True, text=True,
        env={**server.env, "GPUPOOL_TOKEN": owner}, timeout=60)
    assert login.returncode == 0, login.stderr
    listed = subprocess.run([sys.executable, "-m", "gpupool.cli.main", "registry", "ls"],
                            capture_output=True, text=True, timeout=60,
                            env={**server.env, "GPUPOOL_TOKEN": owner})
    assert host.replace(":", "_") in listed.stdout and PASSWORD not in listed.stdout
    phase, log = run_in(server, owner, image)
    assert phase == "succeeded", log
    assert 'NAME="gpupool test image"' in log and PASSWORD not in log
    # the image is on the node now; the other team still has to sign in, and cannot
    phase, log = run_in(server, stranger, image)
    assert phase == "failed" and "authentication required" in log, log
    # the login file lives in the server's run dir only, 0600
    auth_files = list((server.home / "runs").glob("*/*/registry-auth.json"))
    assert auth_files and all(oct(p.stat().st_mode & 0o777) == "0o600" for p in auth_files)
