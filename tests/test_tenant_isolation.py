"""Tenants cannot reach each other: a job (and a pipeline shell step) of team B, submitted
through the real CLI to a real `gpupool up` running as root, tries every way into team A's
work and the server's files (tests/attacker.py), and every attempt fails while team A's job
and pipeline finish normally. Run with the bubblewrap sandbox and with GPUPOOL_SANDBOX=none
(then only what the Unix account alone protects is claimed: files, signals, environ).

GPU devices: this machine has none, so the server is pointed (GPUPOOL_DEV_DIR) at a folder
of stand-in character devices named nvidia0..3 and nvidiactl; the sandbox binds only the
job's own one at /dev/nvidiaN. The real-GPU check belongs to the GPU acceptance script.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server_harness import Server, job_reachable_dir, running, stand_in_devices, wait_for

ATTACKER = (Path(__file__).parent / "attacker.py").read_text()
ALICE_ENV = "alice-env-secret-5517"
ALICE_SECRET = "alice-pipeline-secret-8830"
MARKER = "server-only-marker-41c2"
DEVICES = [0, 1, 2, 3]

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                 reason="isolation needs the server to run as root (CI does)")

VICTIM = """
import os, time, pathlib
job = pathlib.Path(os.environ['GPUPOOL_JOB_DIR'])
(job / 'alice-private.txt').write_text('ALICE-JOB-FILE')
pathlib.Path('workdir-private.txt').write_text('ALICE-WORKDIR-FILE')
deadline = time.time() + 120
while not (job / 'done').exists() and time.time() < deadline:
    time.sleep(0.05)
print('alice done', flush=True)
"""

VICTIM_STEP = """
import os, time, pathlib
out = pathlib.Path(os.environ['GPUPOOL_OUTPUTS'])
deadline = time.time() + 120
while not (out.parent / 'done').exists() and time.time() < deadline:
    time.sleep(0.05)
(out / 'ok').write_text('yes')
print('alice step done', flush=True)
"""


@pytest.fixture(params=["bwrap", "none"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    devices = stand_in_devices(job_reachable_dir("gpdev"), len(DEVICES))
    try:
        with running(Server(tmp_path / "home", "", "4xA100-80GB", isolated=True, extra_env={
                "GPUPOOL_SANDBOX": request.param, "GPUPOOL_DEV_DIR": str(devices),
                "SERVER_ONLY_MARKER": MARKER})) as server:
            yield server
    finally:
        shutil.rmtree(devices.parent, ignore_errors=True)


def cli(server: Server, token: str, *args: str, cwd: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {**server.env, "GPUPOOL_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=180, cwd=cwd)


def user(admin: httpx.Client, name: str, team: str) -> tuple[str, str]:
    """(token, unix user) of a new user of ``team``."""
    made = admin.post("/users", json={"name": name, "team": team})
    assert made.status_code == 201, made.text
    token = admin.post("/tokens", json={"user": name}).json()["token"]
    return token, made.json()["unix_user"]


def attack_results(log: str) -> dict[str, str]:
    line = next(line for line in log.splitlines() if line.startswith("ATTACK "))
    results: dict[str, str] = json.loads(line[len("ATTACK "):])
    return results


def own_devices(log: str) -> list[int]:
    line = next(line for line in log.splitlines() if line.startswith("OWN-DEVICES "))
    return list(json.loads(line[len("OWN-DEVICES "):]))


def test_a_team_cannot_reach_another_teams_work_or_the_server(
    server: Server, request: pytest.FixtureRequest
) -> None:
    sandboxed = request.node.callspec.params["server"] == "bwrap"
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice{tag}", f"bob{tag}"
    with server.client() as admin:
        for team in (f"ta{tag}", f"tb{tag}"):
            assert admin.post("/teams", json={"name": team, "quota_gpus": 2}).status_code == 201
        alice_token, alice_unix = user(admin, alice, f"ta{tag}")
        bob_token, bob_unix = user(admin, bob, f"tb{tag}")
        try:
            assert alice_unix != bob_unix and "root" not in (alice_unix, bob_unix)
            run_attack(server, admin, sandboxed, alice_token, alice_unix, bob_token)
        finally:
            for job in admin.get("/jobs", params={"all": "true"}).json():
                if job["phase"] in ("pending", "starting", "running"):
                    admin.post(f"/jobs/{job['id']}/cancel")
            wait_for(lambda: all(j["phase"] not in ("pending", "starting", "running")
                                 for j in admin.get("/jobs").json()), timeout=60)
            for name in (alice, bob):
                admin.delete(f"/users/{name}")


def run_attack(server: Server, admin: httpx.Client, sandboxed: bool, alice_token: str,
               alice_unix: str, bob_token: str) -> None:
    account = pwd.getpwnam(alice_unix)
    workdir = job_reachable_dir("gpa")
    os.chown(workdir, account.pw_uid, account.pw_gid)
    os.chmod(workdir, 0o700)
    alice = httpx.Client(base_url=server.url + "/api/v1", timeout=30,
                         headers={"Authorization": f"Bearer {alice_token}"})
    # Team A: a job holding a GPU share and an env secret, and a pipeline step with a secret.
    assert alice.put("/secrets/ALICE_KEY", json={"value": ALICE_SECRET}).status_code == 200
    sub = cli(server, alice_token, "run", "--gpus", "0.5", "--name", "victim", "-e",
              f"ALICE_ENV={ALICE_ENV}", "--json", "--", "python3", "-c", VICTIM,
              cwd=str(workdir))
    assert sub.returncode == 0, sub.stderr
    victim = str(json.loads(sub.stdout)["id"])
    run = alice.post("/pipeline-runs", json={"definition": {"name": "alicepl", "steps": [
        {"name": "hold", "kind": "shell", "command": ["python3", "-c", VICTIM_STEP],
         "outputs": ["ok"], "secrets": [{"name": "ALICE_KEY"}]}]}})
    assert run.status_code == 201, run.text
    run_id = str(run.json()["id"])
    step_dir = server.work_dir / "pipelines" / "runs" / run_id / "hold" / "1"
    wait_for(lambda: admin.get(f"/jobs/{victim}").json()["phase"] == "running", timeout=60)
    wait_for(lambda: (step_dir / "secrets.json").exists(), timeout=60)
    job_dir = server.work_dir / "jobs" / victim / "1"
    wait_for(lambda: (job_dir / "alice-private.txt").exists() and
             (workdir / "workdir-private.txt").exists(), timeout=60)
    # What a stranger may not reach, and the processes it may not touch.
    run_dir = server.home / "runs" / victim / "1"
    shim_pid = int(json.loads((run_dir / "handle.json").read_text())["pid"])
    group = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == shim_pid]
    assert server.proc is not None
    server_pid = server.proc.pid
    targets = {
        "read": {
            "admin.token": str(server.home / "admin.token"),
            "secret.key": str(server.home / "secret.key"),
            "database": str(server.home / "gpupool.db"),
            "alice's log": str(server.home / "runs" / victim / "log"),
            "alice's launch.json": str(run_dir / "launch.json"),
            "alice's job dir file": str(job_dir / "alice-private.txt"),
            "alice's workdir file": str(workdir / "workdir-private.txt"),
            "alice's secrets.json": str(step_dir / "secrets.json"),
        },
        "pids": [*sorted(set(group) - {shim_pid}), server_pid],
        "secrets": [server.token, ALICE_ENV, ALICE_SECRET, MARKER],
        "devices": DEVICES if sandboxed else [],
    }
    for path in targets["read"].values():
        assert Path(path).exists(), path  # every target is real: a miss would prove nothing
    assert len(targets["pids"]) >= 2
    # Team B: the same attacks from a job (with a GPU share) and from a pipeline shell step.
    attack = ["python3", "-c", ATTACKER, json.dumps(targets)]
    sub = cli(server, bob_token, "run", "--gpus", "0.5", "--wait", "--json", "--", *attack,
              cwd="/")
    bob_job = str(json.loads(sub.stdout)["id"])
    job_log = cli(server, bob_token, "logs", bob_job).stdout
    bob_view = admin.get(f"/jobs/{bob_job}").json()
    from_job = attack_results(job_log)
    bob = httpx.Client(base_url=server.url + "/api/v1", timeout=30,
                       headers={"Authorization": f"Bearer {bob_token}"})
    pl = bob.post("/pipeline-runs", json={"definition": {"name": "bobpl", "steps": [
        {"name": "probe", "kind": "shell", "command": attack}]}})
    assert pl.status_code == 201, pl.text
    bob_run = str(pl.json()["id"])
    wait_for(lambda: bob.get(f"/pipeline-runs/{bob_run}").json()["state"]
             in ("succeeded", "failed"), timeout=90)
    from_step = attack_results(bob.get(f"/pipeline-runs/{bob_run}/logs").json()["data"])
    for where, results in (("job", from_job), ("pipeline shell step", from_step)):
        leaks = {k: v for k, v in results.items() if not v.startswith("blocked")}
        assert not leaks, f"{where} got in: {leaks}"
        assert len(results) >= len(targets["read"]) + 2 * len(targets["pids"]) + 1
    assert "write own limit" in from_job and "replace own limit" in from_job
    if sandboxed:  # the job saw its own stand-in GPU device, and only that one
        assert bob_view["isolation"].startswith("bwrap as "), bob_view
        assert len(own_devices(job_log)) == 1, (job_log, bob_view)
        assert sum(k.startswith("open /dev/nvidia") for k in from_job) == 3
        assert admin.get(f"/jobs/{victim}").json()["isolation"].startswith("bwrap as ")
    # Team A's work was not disturbed: both finish normally.
    (job_dir / "done").touch()
    (step_dir / "done").touch()
    wait_for(lambda: admin.get(f"/jobs/{victim}").json()["phase"] == "succeeded", timeout=60)
    assert "alice done" in admin.get(f"/jobs/{victim}/logs").json()["data"]
    view = wait_for(lambda: (v := alice.get(f"/pipeline-runs/{run_id}").json())["state"]
                    in ("succeeded", "failed") and v, timeout=60)
    assert view["state"] == "succeeded", (view, alice.get(
        f"/pipeline-runs/{run_id}/logs").json()["data"])
    assert server.proc is not None and server.proc.poll() is None
    shutil.rmtree(workdir, ignore_errors=True)


def _pgid(pid: int) -> int:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return -1
    return int(data[data.rindex(b")") + 2:].split()[2])
