"""Notebooks in the loop (middle tier: the real API and controller, a scripted executor, a
fake clock): how JupyterLab is launched, suspend and resume, idle reclaim giving the GPU to a
waiting job, deletion, names, and what the API refuses. Real JupyterLab through a real
``gpupool up`` is tests/test_notebooks_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupool.server.gateway.keys import notebook_secret
from gpupool.server.notebook_watch import NotebookWatch, Probe
from inprocess_api import GATEWAY_URL, InProcessServer, submit


@pytest.fixture
def server(tmp_path: Path) -> InProcessServer:
    return InProcessServer(tmp_path, nodes=1, cards=2)


def create(server: InProcessServer, client=None, **spec: object) -> dict:  # type: ignore[no-untyped-def]
    made = (client or server.admin).post("/jobs", json={"kind": "notebook", **spec})
    assert made.status_code == 201, made.text
    return dict(made.json())


def job(server: InProcessServer, job_id: int | str, client=None) -> dict:  # type: ignore[no-untyped-def]
    got = (client or server.admin).get(f"/jobs/{job_id}")
    assert got.status_code == 200, got.text
    return dict(got.json())


class FakeProbes(NotebookWatch):
    """The watch with Jupyter's answers scripted (real answers: the end-to-end test)."""

    answers: dict[int, Probe]

    def probe(self, job_id, attempt, endpoint):  # type: ignore[no-untyped-def]
        return self.answers.get(job_id)


def watch_of(server: InProcessServer) -> FakeProbes:
    watch = FakeProbes(server.db, lambda j, a: notebook_secret(server.gateway_key, j, a),
                       lambda: GATEWAY_URL, server.controller.wake,
                       server.settings.notebook_idle_timeout_s, clock=server.clock)
    watch.answers = {}
    return watch


def test_a_notebook_runs_jupyterlab_as_told_with_its_secret_out_of_sight(
        server: InProcessServer) -> None:
    nb = create(server, name="lab", gpus=0.5)
    assert nb["kind"] == "notebook" and nb["phase"] == "pending"
    server.step()
    launched = server.executor.launched[-1]
    argv = list(launched.command)
    assert argv[1:3] == ["-m", "jupyterlab"]
    assert f"--ServerApp.base_url=/nb/{nb['id']}/" in argv
    assert "--ServerApp.ip=127.0.0.1" in argv and "--ServerApp.port_retries=0" in argv
    assert "--LabApp.news_url=None" in argv
    assert "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate" in argv
    secret = notebook_secret(server.gateway_key, int(nb["id"]), 1)
    assert launched.env["JUPYTER_TOKEN"] == secret
    assert not any(secret in arg for arg in argv)  # the command line is readable by all
    home = server.settings.jobs_root / "envs" / nb["id"]
    assert launched.workdir == str(home) and home.is_dir()
    assert launched.env["HOME"] == str(home)
    assert str(home) in launched.readable  # bound back into the sandbox, read-write
    assert launched.env["GPUPOOL_GPU_FRACTION"] == "0.5"
    view = job(server, nb["id"])
    assert view["phase"] == "running" and view["url"] is None  # not answering yet


def test_the_watch_writes_the_url_once_jupyter_answers(server: InProcessServer) -> None:
    nb = create(server, gpus=0.25)
    server.step()
    watch = watch_of(server)
    watch.check()
    assert job(server, nb["id"])["url"] is None
    watch.answers[int(nb["id"])] = Probe(server.clock(), busy=False)
    watch.check()
    assert job(server, nb["id"])["url"] == f"{GATEWAY_URL}/nb/{nb['id']}/lab"


def test_suspend_gives_the_gpu_back_keeps_the_files_and_resume_queues_it_again(
        server: InProcessServer) -> None:
    nb = create(server, name="lab", gpus=1)
    other = create(server, name="other", gpus=1)
    server.step()
    home = server.settings.jobs_root / "envs" / nb["id"]
    (home / "work.py").write_text("print(1)\n")
    waiting = submit(server.admin, gpus=1)
    server.step()
    assert job(server, waiting)["phase"] == "pending"
    answer = server.admin.post(f"/jobs/{nb['id']}/suspend")
    assert answer.status_code == 202, answer.text
    server.step()  # SIGTERM
    server.step()  # it ended: suspended; the waiting job takes the GPU
    view = job(server, nb["id"])
    assert view["phase"] == "suspended" and view["placement"] is None
    assert view["events"][-1]["phase"] == "suspended"
    server.step()
    assert job(server, waiting)["phase"] == "running"
    assert (home / "work.py").read_text() == "print(1)\n"
    assert server.admin.post(f"/jobs/{nb['id']}/suspend").status_code == 409
    assert server.admin.post(f"/jobs/{nb['id']}/resume").status_code == 202
    server.step()
    assert job(server, nb["id"])["phase"] == "pending"  # queued behind the job now
    server.executor.end(waiting)
    server.step()
    server.step()
    view = job(server, nb["id"])
    assert view["phase"] == "running" and view["attempts"] == 2
    launched = server.executor.launched[-1]
    assert launched.env["JUPYTER_TOKEN"] == notebook_secret(server.gateway_key,
                                                            int(nb["id"]), 2)
    assert launched.workdir == str(home)
    assert job(server, other["id"])["phase"] == "running"


def test_idle_reclaim_suspends_the_notebook_and_a_waiting_job_gets_its_gpu(
        server: InProcessServer) -> None:
    nb = create(server, name="idle", gpus=1, idle_timeout_s=20)
    busy = create(server, name="busy", gpus=1, idle_timeout_s=20)
    server.step()
    waiting = submit(server.admin, gpus=1)
    server.step()
    watch = watch_of(server)
    start = server.clock()
    watch.answers = {int(nb["id"]): Probe(start, busy=False),
                     int(busy["id"]): Probe(start, busy=True)}
    server.clock.now += 10
    watch.check()
    assert job(server, nb["id"])["phase"] == "running"
    watch.touch(int(nb["id"]), server.clock())  # traffic through the gateway
    server.clock.now += 15
    watch.check()
    assert job(server, nb["id"])["phase"] == "running"  # 15 s since the traffic
    server.clock.now += 10
    watch.check()
    server.step()
    server.step()
    view = job(server, nb["id"])
    assert view["phase"] == "suspended"
    assert any("idle for 25 s" in e["message"] for e in view["events"])
    assert job(server, busy["id"])["phase"] == "running"  # its kernel is busy
    server.step()
    assert job(server, waiting)["phase"] == "running"


def test_idle_since_shows_who_holds_an_idle_slice(server: InProcessServer) -> None:
    nb = create(server, gpus=0.5)
    server.step()
    watch = watch_of(server)
    watch.answers[int(nb["id"])] = Probe(server.clock(), busy=False)
    server.clock.now += 90
    watch.check()
    listed = server.admin.get("/jobs", params={"kind": "notebook"}).json()
    assert [j["id"] for j in listed] == [nb["id"]]
    assert listed[0]["idle_since"] is not None
    watch.answers[int(nb["id"])] = Probe(server.clock(), busy=False)
    watch.check()
    assert job(server, nb["id"])["idle_since"] is None


def test_delete_removes_a_suspended_notebook_and_its_files(server: InProcessServer) -> None:
    nb = create(server, name="gone", gpus=0.5)
    server.step()
    home = server.settings.jobs_root / "envs" / nb["id"]
    assert home.is_dir()
    server.admin.post(f"/jobs/{nb['id']}/suspend")
    server.step()
    server.step()
    assert job(server, nb["id"])["phase"] == "suspended"
    assert server.admin.post(f"/jobs/{nb['id']}/cancel").status_code == 200
    server.step()
    assert job(server, nb["id"])["phase"] == "cancelled"
    assert not home.exists()
    assert create(server, name="gone")["name"] == "gone"  # the name is free again


def test_names_are_unique_among_a_teams_live_workloads(server: InProcessServer) -> None:
    ada = server.user("ada", "default")
    assert create(server, ada)["name"] == "notebook-1"
    assert create(server, ada)["name"] == "notebook-2"
    create(server, ada, name="mine")
    again = ada.post("/jobs", json={"kind": "notebook", "name": "mine"})
    assert again.status_code == 409 and "mine" in again.json()["detail"]
    submit(ada, name="train")
    clash = ada.post("/jobs", json={"kind": "notebook", "name": "train"})
    assert clash.status_code == 409


@pytest.mark.parametrize(("spec", "field"), [
    ({"kind": "notebook", "command": ["python"]}, "command"),
    ({"command": ["sleep", "1"], "idle_timeout_s": 60}, "idle_timeout_s"),
    ({"kind": "notebook", "idle_timeout_s": 1}, "idle_timeout_s"),
    ({"kind": "notebook", "idle_timeout_s": 10 ** 7}, "idle_timeout_s"),
    ({"kind": "notebook", "nodes": 2, "gpus": 1}, "nodes"),
    ({"kind": "notebook", "restart": "on-failure"}, "restart"),
    ({"kind": "laptop"}, "kind"),
    ({}, "command"),
])
def test_bad_notebook_specs_are_refused_naming_the_field(
        server: InProcessServer, spec: dict, field: str) -> None:
    answer = server.admin.post("/jobs", json=spec)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"]
    assert server.admin.get("/jobs").json() == []


def test_suspend_and_resume_refuse_what_they_do_not_apply_to(server: InProcessServer) -> None:
    batch = submit(server.admin)
    assert server.admin.post(f"/jobs/{batch}/suspend").status_code == 409
    assert server.admin.post(f"/jobs/{batch}/open").status_code == 409
    nb = create(server)
    assert server.admin.post(f"/jobs/{nb['id']}/resume").status_code == 409
    assert server.admin.post("/teams", json={"name": "red"}).status_code == 201
    stranger = server.user("eve", "red")
    assert stranger.post(f"/jobs/{nb['id']}/suspend").status_code == 404
    assert stranger.post(f"/jobs/{nb['id']}/open").status_code == 404


def test_open_gives_the_owner_a_one_time_sign_in_address(server: InProcessServer) -> None:
    ada = server.user("ada", "default")
    bob = server.user("bob", "default")
    nb = create(server, ada)
    url = ada.post(f"/jobs/{nb['id']}/open").json()["url"]
    assert url.startswith(f"{GATEWAY_URL}/nb/{nb['id']}/_gpupool/signin?ticket=")
    assert bob.post(f"/jobs/{nb['id']}/open").status_code == 404  # personal, even in-team
    assert server.admin.post(f"/jobs/{nb['id']}/open").status_code == 200


def test_a_pending_notebook_suspends_at_once_and_its_lifetime_suspends_it(
        tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=1, cards=1, notebook_max_lifetime_s=100)
    first = create(server, gpus=1)
    second = create(server, gpus=1)
    server.step()
    assert server.admin.post(f"/jobs/{second['id']}/suspend").status_code == 202
    server.step()
    assert job(server, second["id"])["phase"] == "suspended"
    server.step(101)
    server.step()
    view = job(server, first["id"])
    assert view["phase"] == "suspended"
    assert any("longest run" in e["message"] for e in view["events"])


def test_a_preempted_notebook_goes_back_to_the_queue_with_its_files(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=1, cards=1)
    low = server.user("low", "default")
    nb = create(server, low, gpus=1, priority=-5)
    server.step()
    home = server.settings.jobs_root / "envs" / nb["id"]
    (home / "keep.txt").write_text("kept")
    submit(server.admin, gpus=1, priority=100)
    for _ in range(3):
        server.step()
    view = job(server, nb["id"])
    assert view["phase"] == "pending"
    assert (home / "keep.txt").read_text() == "kept"
