"""The CLI's consistency items (issue 15, item 8) against a real server: `cancel` takes several
jobs and --all-pending; `logs` of a waiting job says so; `logs -f` ends with how the job
ended; `run --wait` of a failed job shows the end of its output; `ls` and `list` are both
accepted."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from server_harness import Server, make_server, submit, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for server in make_server("sqlite", tmp_path_factory.mktemp("cli-cons"), "1xA100-80GB"):
        with server.client() as admin:
            admin.post("/teams", json={"name": "parked", "quota_gpus": 0})
            for name in ("ann", "ben"):
                admin.post("/users", json={"name": name, "team": "parked", "unix_user": "root"})
        yield server


def token_of(server: Server, user: str) -> str:
    with server.client() as admin:
        return str(admin.post("/tokens", json={"user": user}).json()["token"])


def gpupool(server: Server, *args: str, token: str = "",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = server.env | ({"GPUPOOL_TOKEN": token} if token else {}) | (env or {})
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def parked_job(server: Server, token: str, name: str) -> str:
    """A job that waits: its team has no quota."""
    with server.client(token) as c:
        return submit(c, command=["true"], gpus=1, name=name)


def phase(server: Server, job_id: str) -> str:
    with server.client() as c:
        return str(c.get(f"/jobs/{job_id}").json()["phase"])


def test_cancel_takes_several_jobs_and_goes_on_past_a_refusal(server: Server) -> None:
    ann = token_of(server, "ann")
    first, second = parked_job(server, ann, "c1"), parked_job(server, ann, "c2")
    done = gpupool(server, "cancel", first, "999999", second, token=ann)
    assert done.returncode == 2
    assert f"cancel requested for job {first} (it was pending)" in done.stdout
    assert f"cancel requested for job {second} (it was pending)" in done.stdout
    assert "job 999999: no job 999999" in done.stderr
    wait_for(lambda: phase(server, first) == phase(server, second) == "cancelled")


def test_cancel_all_pending_takes_only_your_own_waiting_jobs(server: Server) -> None:
    ann, ben = token_of(server, "ann"), token_of(server, "ben")
    mine = [parked_job(server, ann, f"a{i}") for i in range(3)]
    theirs = parked_job(server, ben, "b0")
    done = gpupool(server, "cancel", "--all-pending", token=ann)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: all(phase(server, j) == "cancelled" for j in mine))
    assert phase(server, theirs) == "pending"  # same team, another user's
    again = gpupool(server, "cancel", "--all-pending", token=ann)
    assert again.returncode == 0 and "no pending jobs of yours" in again.stderr
    both = gpupool(server, "cancel", theirs, "--all-pending", token=ben)
    assert both.returncode == 2 and "not both" in both.stderr


def test_logs_of_a_waiting_job_say_it_waits(server: Server) -> None:
    ann = token_of(server, "ann")
    job = parked_job(server, ann, "waits")
    done = gpupool(server, "logs", job, token=ann)
    assert done.returncode == 0 and done.stdout == ""
    assert f"job {job} is pending: " in done.stderr and "no output yet" in done.stderr


def test_logs_follow_ends_with_how_the_job_ended(server: Server) -> None:
    with server.client() as admin:
        job = submit(admin, command=[sys.executable, "-c", "print('hello')"], name="hi")
    done = gpupool(server, "logs", "-f", job)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n"
    assert f"job {job} (hi) succeeded" in done.stderr


def test_run_wait_of_a_failed_job_shows_the_end_of_its_output(server: Server) -> None:
    script = "import sys\nfor i in range(100): print('line', i)\nsys.exit('boom: bad input')"
    done = gpupool(server, "run", "--wait", "--name", "fails", "--", sys.executable, "-c",
                   script)
    assert done.returncode == 1, done.stderr
    assert "last lines of the output of job" in done.stderr
    assert "line 99" in done.stderr and "boom: bad input" in done.stderr
    assert "line 50" not in done.stderr  # only the tail
    assert "(fails) failed" in done.stderr


@pytest.mark.parametrize("words", [("pipeline", "list"), ("pipeline", "ls"),
                                   ("admin", "token", "ls"), ("admin", "token", "list"),
                                   ("pipeline", "secret", "list"), ("admin", "team", "ls"),
                                   ("admin", "user", "ls")])
def test_ls_and_list_are_both_accepted(server: Server, words: tuple[str, ...]) -> None:
    done = gpupool(server, *words)
    assert done.returncode == 0, done.stderr


def test_ps_wide_shows_the_whole_reason_and_describe_too(server: Server) -> None:
    ann = token_of(server, "ann")
    job = parked_job(server, ann, "why")
    with server.client() as c:
        reason = wait_for(lambda: c.get(f"/jobs/{job}").json()["reason"].startswith("queue")
                          and c.get(f"/jobs/{job}").json()["reason"])
    assert len(reason) > 60  # cut in the default listing
    env = {"COLUMNS": "100"}
    short = gpupool(server, "ps", "--queue", "parked", "--phase", "pending", token=ann, env=env)
    wide = gpupool(server, "ps", "-w", "--queue", "parked", "--phase", "pending", token=ann,
                   env=env)
    described = gpupool(server, "describe", job, token=ann, env=env)
    assert reason not in " ".join(short.stdout.split())
    flat = "".join(wide.stdout.split())  # wrapped anywhere: compare without white space
    assert "".join(reason.split()) in flat
    assert "".join(reason.split()) in "".join(described.stdout.split())


def test_run_with_the_same_idempotency_key_answers_the_first_job(server: Server) -> None:
    ann = token_of(server, "ann")
    args = ("run", "--idempotency-key", "retry-7f3a", "--gpus", "1", "--", "true")
    first, again = gpupool(server, *args, token=ann), gpupool(server, *args, token=ann)
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    assert first.stdout == again.stdout and first.stdout.strip().isdigit()
    other = gpupool(server, "run", "--idempotency-key", "retry-7f3a", "--gpus", "1", "--",
                    "false", token=ann)
    assert other.returncode == 2 and "Idempotency-Key" in other.stderr, other.stderr
    bad = gpupool(server, "run", "--idempotency-key", "", "--", "true", token=ann)
    assert bad.returncode == 2 and "--idempotency-key" in bad.stderr


def test_admin_team_create_warns_when_quotas_pass_the_pool(server: Server) -> None:
    done = gpupool(server, "admin", "team", "create", "greedy", "--quota-gpus", "1")
    assert done.returncode == 0, done.stderr
    assert "warning: guaranteed quotas add up to 2 GPUs (default 1, greedy 1), more than " \
           "the pool's 1" in " ".join(done.stderr.split())
    fixed = gpupool(server, "admin", "team", "set", "greedy", "--quota-gpus", "0")
    assert fixed.returncode == 0 and "warning" not in fixed.stderr
