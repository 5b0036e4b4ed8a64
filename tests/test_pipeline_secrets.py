"""Secrets never show (step logs, the pipeline and jobs APIs, the database file), HTTP steps
against a tiny local server started by the test, and nested pipelines."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from pipeline_helpers import finished, py_step, start, steps
from server_harness import Server, make_server

TOKEN = "tok-5ecr3t-9417"
CERT = "-----BEGIN KEY-----\nline-two-is-secret\n-----END KEY-----\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The HTTP steps here call servers on 127.0.0.1, which only an admin's allow list permits.
    yield from make_server("sqlite", tmp_path_factory.mktemp("secrets"), "1xA100-80GB",
                           {"GPUPOOL_HTTP_ALLOW_HOSTS": "127.0.0.1"})


def test_a_secret_never_appears_in_logs_or_api_output(server: Server) -> None:
    leak = ("print('token=' + os.environ['API_TOKEN'], flush=True)\n"
            "print('cert=' + open(os.environ['CERT_PATH']).read(), flush=True)\n"
            "print('mode', oct(os.stat(os.environ['CERT_PATH']).st_mode & 0o777))\n"
            "(out / 'length').write_text(str(len(os.environ['API_TOKEN'])))\n")
    definition = {"name": "secretive", "steps": [
        py_step("job_leak", leak, kind="job", outputs=["length"],
                secrets=[{"name": "API_TOKEN"}, {"name": "CERT", "as_file": True,
                                                 "env": "CERT_PATH"}]),
        py_step("shell_leak", leak, outputs=["length"],
                secrets=[{"name": "API_TOKEN"}, {"name": "CERT", "as_file": True,
                                                 "env": "CERT_PATH"}]),
    ]}
    with server.client() as c:
        assert c.put("/secrets/API_TOKEN", json={"value": TOKEN}).status_code == 200
        assert c.put("/secrets/CERT", json={"value": CERT}).status_code == 200
        run_id = start(c, definition)
        view = finished(c, run_id)
        assert view["state"] == "succeeded", view
        by = steps(view)
        assert by["job_leak"]["outputs"] == {"length": str(len(TOKEN))}  # it had the value
        logs = c.get(f"/pipeline-runs/{run_id}/logs").json()["data"]
        assert logs.count("token=***") == 2 and "line-two-is-secret" not in logs
        assert "mode 0o600" in logs
        job_id = by["job_leak"]["job_id"]
        answers = [
            logs,
            c.get(f"/pipeline-runs/{run_id}").text,
            c.get("/pipeline-runs").text,
            c.get("/secrets").text,
            c.get(f"/jobs/{job_id}").text,  # the job's spec (env, command) too
            c.get(f"/jobs/{job_id}/logs").text,  # the log on disk was masked as written
        ]
        for text in answers:
            assert TOKEN not in text and "line-two-is-secret" not in text
        assert [s["name"] for s in c.get("/secrets").json()] == ["API_TOKEN", "CERT"]
    # encrypted at rest, with a key outside the database; plaintext files are gone
    for db_file in server.home.glob("gpupool.db*"):
        assert TOKEN.encode() not in db_file.read_bytes()
    key = server.home / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    left = [p for p in (server.home / "pipelines").rglob("*") if p.is_file()
            and TOKEN.encode() in p.read_bytes()]
    assert left == []


class Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"auth": self.headers["Authorization"], "body": body})
        answer = json.dumps({"doubled": int(body["n"]) * 2}).encode()
        self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Recorder.seen.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_steps_and_nested_pipelines(server: Server, http_server: str) -> None:
    child = {"name": "child", "params": {"x": {"type": "int"}}, "steps": [
        py_step("square", "(out / 'sq').write_text(str(${{ params.x }} ** 2))",
                outputs=["sq"])], "outputs": {"squared": "${{ steps.square.outputs.sq }}"}}
    definition = {"name": "calls", "params": {"n": 21}, "steps": [
        {"name": "call", "http": {
            "url": f"{http_server}/ok", "method": "POST", "body": {"n": "${{ params.n }}"},
            "headers": {"Authorization": "Bearer ${{ secrets.HTTP_KEY }}"}}},
        py_step("parse", "import json\n(out / 'doubled').write_text(str(json.loads("
                "os.environ['BODY'])['doubled']))", outputs=["doubled"],
                inputs={"BODY": "${{ steps.call.outputs.body }}"}),
        {"name": "sub", "pipeline": child, "with": {"x": "${{ steps.parse.outputs.doubled }}"},
         "outputs": ["squared"]},
        py_step("report", "(out / 'r').write_text('${{ steps.sub.outputs.squared }}')",
                outputs=["r"]),
        {"name": "refused", "http": {"url": f"{http_server}/down", "method": "POST",
                                     "body": {"n": 1}}, "allow_failure": True},
    ]}
    with server.client() as c:
        assert c.put("/secrets/HTTP_KEY", json={"value": "hk-very-secret"}).status_code == 200
        run_id = start(c, definition)
        view = finished(c, run_id)
        assert view["state"] == "succeeded", view
        by = steps(view)
        assert by["call"]["outputs"]["status"] == 200
        assert by["parse"]["outputs"] == {"doubled": "42"}
        assert by["sub"]["outputs"] == {"squared": "1764"}
        assert by["report"]["outputs"] == {"r": "1764"}
        assert by["refused"]["state"] == "failed" and "HTTP 503" in by["refused"]["message"]
        child_run = c.get(f"/pipeline-runs/{by['sub']['child_run']}").json()
        assert child_run["parent_run"] == run_id and child_run["state"] == "succeeded"
        assert {"auth": "Bearer hk-very-secret", "body": {"n": "21"}} in Recorder.seen
        for text in (c.get(f"/pipeline-runs/{run_id}/logs").text,
                     c.get(f"/pipeline-runs/{run_id}").text):
            assert "hk-very-secret" not in text
