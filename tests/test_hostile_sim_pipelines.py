"""Hostile input against a real `gpupool up` (SQLite): trace files with absurd sizes, bad bytes
or too many of them; simulator runs and traces of another team; and a job named like a
pipeline step's, submitted to take the step over."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpupool.server.services.simulation import MAX_UPLOAD_BYTES
from pipeline_helpers import finished, py_step, start, steps
from server_harness import Server, make_server, submit, wait_for

PY = sys.executable
NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,65536,2,T4\n"
PODS = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,2000,1024,1,500\np1,1000,512,0,0\n"
MB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("hostile"), "1xA100-80GB")


@pytest.fixture(scope="module")
def tokens(server: Server) -> dict[str, str]:
    """alice (team red) and bob (team blue); their jobs run as root, so no Unix accounts."""
    out = {}
    with server.client() as admin:
        for user, team in (("alice", "red"), ("bob", "blue")):
            assert admin.post("/teams", json={"name": team}).status_code == 201
            response = admin.post("/users", json={"name": user, "team": team,
                                                   "unix_user": "root"})
            assert response.status_code == 201, response.text
            out[user] = admin.post("/tokens", json={"user": user}).json()["token"]
    return out


def rss(server: Server) -> int:
    """The server process's resident memory, bytes."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def put_csv(client: httpx.Client, name: str, body: bytes | str) -> httpx.Response:
    return client.put(f"/sim/traces/{name}", content=body, headers={"Content-Type": "text/csv"})


def raw_put(server: Server, name: str, headers: dict[str, str], chunks: Iterator[bytes]
            ) -> tuple[int, str]:
    """PUT over a bare socket (the body as it is produced, nothing buffered); the status and
    body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        head = {"Host": "127.0.0.1", "Authorization": f"Bearer {server.token}",
                "Content-Type": "text/csv", **headers}
        sock.sendall((f"PUT /api/v1/sim/traces/{name} HTTP/1.1\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: that is the point
        data = b""
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            assert got, f"connection closed without an answer: {data!r}"
            data += got
        top, _, body = data.partition(b"\r\n\r\n")
        lines = top.decode().split("\r\n")
        length = next(int(h.split(":", 1)[1]) for h in lines
                      if h.lower().startswith("content-length:"))
        while len(body) < length:
            got = sock.recv(65536)
            assert got, "connection closed in the middle of the answer"
            body += got
    return int(lines[0].split()[1]), body[:length].decode()


def test_absurd_numbers_and_bad_bytes_are_refused_without_memory(server: Server) -> None:
    with server.client() as c:
        assert put_csv(c, "warm.csv", NODES).status_code == 201  # imports, thread pool
        before = rss(server)
        bomb = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,65536,100000000,T4\n"
        assert len(bomb) <= 65
        response = put_csv(c, "bomb.csv", bomb)
        after = rss(server)
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == (
            "body: bomb.csv, row 2, column 'gpu': '100000000' is above the limit of 64")
        assert after - before < 100 * MB, (before, after)
        for text, fragment in (
            (bomb.replace("100000000", "1e30"), "row 2, column 'gpu': '1e30' is not a whole"),
            (bomb.replace("100000000", "1" + "0" * 30), "row 2, column 'gpu'"),
            (PODS.replace("2000", "9" * 40), "row 2, column 'cpu_milli'"),
            (PODS.replace("p1,1000,512,0,0", "p1,1,1,0,0,9"), "row 3"),
        ):
            response = put_csv(c, "bad.csv", text)
            assert response.status_code == 422, response.text
            assert fragment in response.json()["detail"], response.text
        for data in (b"\xff\xfe\x00garbage\n", NODES.encode().replace(b"32000", b"32\xff00")):
            response = put_csv(c, "bytes.csv", data)
            assert response.status_code == 422, response.text
            assert "not UTF-8" in response.json()["detail"], response.text
        wide = "sn,cpu_milli,memory_mib,gpu,model\n" + "n,1,1,0," + "x" * (2 * MB) + "\n"
        response = put_csv(c, "wide.csv", wide)
        assert response.status_code == 422 and "row 2" in response.json()["detail"]
        names = {t["name"] for t in c.get("/sim/traces").json()}
        assert names == {"warm.csv"}


def test_an_upload_over_the_limit_is_refused_while_it_streams(server: Server) -> None:
    before = rss(server)

    def over_the_limit() -> Iterator[bytes]:
        block = b"n,1,1,0,\n" * (MB // 9) + b"\n" * (MB % 9)
        yield b"%x\r\nsn,cpu_milli,memory_mib,gpu,model\n\r\n" % 34
        sent = 34
        while sent <= MAX_UPLOAD_BYTES:
            part = block[: MAX_UPLOAD_BYTES + 1 - sent]
            yield b"%x\r\n%s\r\n" % (len(part), part)
            sent += len(part)

    code, body = raw_put(server, "big.csv", {"Transfer-Encoding": "chunked"}, over_the_limit())
    assert code == 413 and "64 MiB" in body, body
    assert rss(server) - before < 100 * MB
    # a declared length over the limit is refused before a byte of the body is read
    code, body = raw_put(server, "big.csv", {"Content-Length": str(MAX_UPLOAD_BYTES + 1)},
                         iter(()))
    assert code == 413, body
    with server.client() as c:
        assert "big.csv" not in {t["name"] for t in c.get("/sim/traces").json()}
    assert not [p for p in (server.home / "traces").rglob("*") if ".upload" in p.name]


def test_another_team_cannot_see_use_or_overwrite_runs_and_traces(
    server: Server, tokens: dict[str, str]
) -> None:
    with server.client(tokens["alice"]) as alice, server.client(tokens["bob"]) as bob:
        assert put_csv(alice, "x.csv", NODES).status_code == 201
        assert put_csv(alice, "p.csv", PODS).status_code == 201
        run = alice.post("/sim/runs", json={"nodes": "x.csv", "pods": "p.csv",
                                            "policies": ["bestfit"], "tune": 0})
        assert run.status_code == 202, run.text
        run_id = run.json()["id"]
        assert alice.get(f"/sim/runs/{run_id}").status_code == 200
        # bob sees neither the run nor the traces, and cannot use them
        assert run_id not in {r["id"] for r in bob.get("/sim/runs").json()}
        assert bob.get(f"/sim/runs/{run_id}").status_code == 404
        assert bob.get("/sim/traces").json() == []
        for name in ["x.csv", *(f"{n}/x.csv" for n in range(1, 8))]:
            refused = bob.post("/sim/runs", json={"nodes": name, "pods": "p.csv"})
            assert refused.status_code == 422, refused.text
        # bob's x.csv is his own: alice's stays as it was
        theirs = NODES + "n1,1000,1024,0,\nn2,1000,1024,0,\n"
        assert put_csv(bob, "x.csv", theirs).status_code == 201
        assert {t["name"]: t["rows"] for t in bob.get("/sim/traces").json()} == {"x.csv": 3}
        mine = {t["name"]: t["rows"] for t in alice.get("/sim/traces").json()}
        assert mine == {"x.csv": 1, "p.csv": 2}
        done = wait_for(lambda: (v := alice.get(f"/sim/runs/{run_id}").json())["status"]
                        in ("done", "failed") and v, timeout=60)
        assert done["status"] == "done", done["error"]
        assert bob.get(f"/sim/runs/{run_id}").status_code == 404
    with server.client() as admin:  # the admin sees every team's
        assert run_id in {r["id"] for r in admin.get("/sim/runs").json()}
        assert admin.get(f"/sim/runs/{run_id}").json()["status"] == "done"
        listed = [t["name"] for t in admin.get("/sim/traces").json()]
        assert sum(n.endswith("/x.csv") for n in listed) == 2
        assert "warm.csv" in listed


def test_a_job_named_like_a_pipeline_step_is_never_adopted(
    server: Server, tokens: dict[str, str], tmp_path: Path
) -> None:
    with server.client() as admin, server.client(tokens["bob"]) as bob:
        # the API cannot set the mark the engine finds its jobs by
        forged = bob.post("/jobs", json={"command": [PY, "-c", "pass"], "origin": "pipeline:1"})
        assert forged.status_code == 422
        next_run = 1 + max((int(r["id"]) for r in admin.get("/pipeline-runs").json()), default=0)
        bobs = submit(bob, command=[PY, "-c", "print('BOB-RAN')"], name=f"pl{next_run}-train-1")
        wait_for(lambda: bob.get(f"/jobs/{bobs}").json()["phase"] == "succeeded")
        definition = {"name": "takeover", "steps": [
            py_step("train", "print('ADMIN-RAN', flush=True)", kind="job")]}
        run_id = start(admin, definition)
        assert run_id == str(next_run)
        view = finished(admin, run_id)
        assert view["state"] == "succeeded", view
        step = steps(view)["train"]
        assert step["job_id"] != bobs
        job = admin.get(f"/jobs/{step['job_id']}").json()
        assert (job["user"], job["name"]) == ("admin", f"pl{next_run}-train-1")
        log = admin.get(f"/pipeline-runs/{run_id}/logs", params={"step": "train"}).json()
        assert "ADMIN-RAN" in log["data"] and "BOB-RAN" not in log["data"]
