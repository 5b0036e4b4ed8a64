"""Jobs in container images, end to end: a real ``gpupool up`` (root, bubblewrap for host
jobs, stand-in GPU device nodes, fake GPUs) runs a job in an image built here with podman (a
busybox root file system; no registry). The job sees the image's /etc/os-release, its own
working directory, only its own GPU device nodes and its environment, runs as its owner's
account with no capabilities, and the files it writes are its owner's; another team's job
cannot read them. Cancelling it removes its container. Skipped, saying why, where podman,
runc or busybox-static cannot be had (scripts/test.sh installs them with apt as root)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import image_builder
from gpupool.executors import proc_tree
from gpupool.server.gpu_watch import container_monitor
from server_harness import (
    Server,
    job_reachable_dir,
    new_user,
    running,
    stand_in_devices,
    wait_for,
)

GPUS = (0, 1, 2, 3)
SECRET_ENV = "image-env-" + uuid.uuid4().hex[:8]
PROBE = r"""
echo "OS $(cat /etc/os-release | head -1)"
echo "UID $(id -u) GID $(id -g)"
echo "PWD $(pwd)"
echo "DEVICES $(ls /dev | grep nvidia | sort | tr '\n' ' ')"
echo "ENV $MY_SETTING"
echo "CAPS $(grep CapEff /proc/self/status)"
echo "from the image" > "$GPUPOOL_JOB_DIR/made-in-image.txt"
echo "also here" > workdir-file.txt
touch /etc/os-release 2>/dev/null && echo "ROOTFS writable" || echo "ROOTFS read-only-for-me"
echo "SERVER $(cat /proc/1/cmdline 2>/dev/null | head -c 40)"
"""

pytestmark = pytest.mark.skipif(image_builder.missing() is not None,
                                reason=str(image_builder.missing()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("images")
    image_builder.build(home)
    devices = stand_in_devices(job_reachable_dir("gpimgdev"), len(GPUS))
    try:
        with running(Server(home / "home", "", "4xA100-80GB", isolated=True, extra_env={
                "GPUPOOL_SANDBOX": "auto", "GPUPOOL_DEV_DIR": str(devices),
                "GPUPOOL_IMAGE_NETWORK": "none", "GPUPOOL_IMAGE_PULL": "never"})) as srv:
            yield srv
    finally:
        shutil.rmtree(devices.parent, ignore_errors=True)


def new_client(admin: httpx.Client, team: str) -> tuple[httpx.Client, str]:
    """(client, unix account) of a new user in a new team."""
    token, unix = new_user(admin, team)
    return httpx.Client(base_url=str(admin.base_url), timeout=30,
                        headers={"Authorization": f"Bearer {token}"}), unix


def finished(client: httpx.Client, job: str, timeout: float = 90) -> dict[str, object]:
    return dict(wait_for(lambda: (v := client.get(f"/jobs/{job}").json())["phase"]
                         in ("succeeded", "failed", "cancelled") and v, timeout=timeout))


def log_text(client: httpx.Client, job: str) -> str:
    return str(client.get(f"/jobs/{job}/logs").json()["data"])


def log_lines(client: httpx.Client, job: str) -> dict[str, str]:
    text = log_text(client, job)
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] if " " in line else ""
            for line in text.splitlines() if line and line.split(" ", 1)[0].isupper()}


def test_a_job_in_an_image_sees_the_image_its_workdir_its_gpu_and_env_as_its_owner(
        server: Server) -> None:
    tag = uuid.uuid4().hex[:6]
    with server.client() as admin:
        alice, alice_unix = new_client(admin, f"ia{tag}")
        bob, _ = new_client(admin, f"ib{tag}")
        account = pwd.getpwnam(alice_unix)
        workdir = job_reachable_dir("gpimgwd")
        os.chown(workdir, account.pw_uid, account.pw_gid)
        os.chmod(workdir, 0o700)
        made = alice.post("/jobs", json={
            "command": ["sh", "-c", PROBE], "image": image_builder.IMAGE, "gpus": 1,
            "workdir": str(workdir), "env": {"MY_SETTING": SECRET_ENV}})
        assert made.status_code == 201, made.text
        job = str(made.json()["id"])
        view = finished(alice, job)
        assert view["phase"] == "succeeded", log_text(alice, job)
        seen = log_lines(alice, job)
        assert seen["OS"] == 'NAME="gpupool test image"'  # the image's, not the host's
        assert seen["UID"] == f"{account.pw_uid} GID {account.pw_gid}"
        assert seen["PWD"] == str(workdir)
        placed = view["placement"]["gpus"]  # type: ignore[index]
        assert len(placed) == 1
        assert seen["DEVICES"].split() == sorted([f"nvidia{placed[0]}", "nvidiactl"])
        assert seen["ENV"] == SECRET_ENV
        assert seen["CAPS"].split()[-1] == "0000000000000000"
        assert seen["ROOTFS"] == "read-only-for-me"
        assert "gpupool" not in seen.get("SERVER", "")  # its own PID namespace
        assert "podman" in str(view["isolation"]) and alice_unix in str(view["isolation"])
        # the environment's value never appears on podman's command line (ps shows that)
        launch = server.home / "runs" / job / "1" / "launch.json"
        assert SECRET_ENV in launch.read_text()
        assert stat.S_IMODE(launch.stat().st_mode) == 0o600
        # its files are its owner's; another team's job cannot read them
        made_file = server.work_dir / "jobs" / job / "1" / "made-in-image.txt"
        assert made_file.read_text() == "from the image\n"
        assert (made_file.stat().st_uid, made_file.stat().st_gid) == (account.pw_uid,
                                                                      account.pw_gid)
        assert (workdir / "workdir-file.txt").stat().st_uid == account.pw_uid
        for spec in ({"image": image_builder.IMAGE}, {"workdir": "/"}):
            snoop = bob.post("/jobs", json={
                "command": ["cat", str(made_file), str(workdir / "workdir-file.txt")],
                **spec})
            assert snoop.status_code == 201, snoop.text
            snooped = str(snoop.json()["id"])
            assert finished(bob, snooped)["phase"] == "failed"
            out = log_text(bob, snooped)
            assert "from the image" not in out and "also here" not in out


def test_cancelling_a_job_in_an_image_stops_and_removes_its_container(server: Server) -> None:
    with server.client() as admin:
        seconds = str(3600 + uuid.uuid4().int % 10_000)  # a command line no other test has
        made = admin.post("/jobs", json={"command": ["sleep", seconds],
                                         "image": image_builder.IMAGE, "grace_period_s": 1})
        assert made.status_code == 201, made.text
        job = str(made.json()["id"])
        name = f"gpupool-{job}-1"
        wait_for(lambda: admin.get(f"/jobs/{job}").json()["phase"] == "running")
        wait_for(lambda: name in image_builder.containers(server.home / "containers"),
                 timeout=30)
        # its processes run below conmon, not below the shim: the GPU figures' process map
        # (gpu_watch) finds them from the conmon pid podman wrote in the run dir
        run_dir = str(server.home / "runs" / job / "1")
        conmon = container_monitor(run_dir)
        assert conmon is not None
        table = proc_tree.read_table()
        sleeper = wait_for(lambda: next((p for p in proc_tree.read_table() if _cmdline(p) ==
                                         ["sleep", seconds]), None), timeout=30)
        shim = int(json.loads((Path(run_dir) / "handle.json").read_text())["pid"])
        table = proc_tree.read_table()
        assert proc_tree.owners(table, {shim: job, conmon: job}).get(sleeper) == job
        assert proc_tree.owners(table, {shim: job}).get(sleeper) is None
        assert admin.post(f"/jobs/{job}/cancel").status_code == 200
        assert finished(admin, job)["phase"] == "cancelled"
        wait_for(lambda: name not in image_builder.containers(server.home / "containers"),
                 timeout=30)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode() for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def test_image_errors_are_named_and_nodes_say_they_run_images(server: Server) -> None:
    with server.client() as admin:
        bad = admin.post("/jobs", json={"command": ["true"], "image": "-rm /"})
        assert bad.status_code == 422 and "image" in bad.text
        nb = admin.post("/jobs", json={"kind": "notebook", "image": image_builder.IMAGE})
        assert nb.status_code == 422 and "image" in nb.text
        nodes = admin.get("/nodes").json()
        assert all(n["labels"].get("gpupool.io/images") == "podman" for n in nodes)
        # an image that is not on the node (pull policy never): the job fails, saying so
        made = admin.post("/jobs", json={"command": ["true"], "image": "localhost/not-there:1"})
        job = str(made.json()["id"])
        assert finished(admin, job)["phase"] == "failed"
        assert "not-there" in log_text(admin, job)
        # the host's / (or /usr, /etc...) is never mounted over the image's own system
        for workdir in ("/", "/usr/lib"):
            made = admin.post("/jobs", json={"command": ["true"], "workdir": workdir,
                                             "image": image_builder.IMAGE})
            view = finished(admin, str(made.json()["id"]))
            assert view["phase"] == "failed"
            assert "cover the image's own system files" in json.dumps(view["events"])
    out = subprocess.run([sys.executable, "-m", "gpupool.cli.main", "nodes"], env=server.env,
                         capture_output=True, text=True, timeout=60)
    assert "IMAGES" in out.stdout and "podman" in out.stdout, out.stdout + out.stderr
    said = (server.home / "server.out").read_text()
    assert "container images: podman " in said and "(runc" in said, said
