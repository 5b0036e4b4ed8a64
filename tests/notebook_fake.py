"""A fake gpupool server for the notebook tests of the CLI (tests/test_notebook_cli.py):
``FakePool`` answers the notebook endpoints of the API with JobView payloads, as the wire
contract (``gpupool.schemas.jobs``) says, and plays the gateway's part for `gpupool shell`
(Jupyter's terminal API: a REST call and a WebSocket whose "shell" runs `echo` and `exit`);
``serve()`` serves it over HTTP from a thread. It holds no scheduling logic: a notebook it
creates is pending, and each read of it moves it on (running, then answering)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect


def job_json(job_id: str, name: str = "nb", phase: str = "running", kind: str = "notebook",
             **extra: Any) -> dict[str, Any]:
    """A JobView as the server sends it: a notebook unless ``kind`` says job."""
    spec: dict[str, Any] = ({"kind": "notebook", "gpus": 0.25, "idle_timeout_s": 1800}
                            if kind == "notebook" else {"command": ["python", "t.py"]})
    view = {"id": job_id, "name": name, "team": "default", "user": "ada", "queue": "default",
            "phase": phase, "kind": kind, "priority": 0, "spec": spec,
            "created_at": "2026-03-01T11:00:00+00:00"}
    return view | extra


class FakePool:
    """The notebook endpoints of the API and the terminal endpoints of the gateway, over
    JobView payloads kept in ``views`` (id -> JSON object). A notebook created here is
    pending; each read of it moves it on (``ready_after`` reads: running, then answering)."""

    def __init__(self) -> None:
        self.url = ""
        self.views: dict[str, dict[str, Any]] = {}
        self.countdown: dict[str, int] = {}
        self.ready_after = 2
        self.posted: list[dict[str, Any]] = []
        self.queries: list[dict[str, list[str]]] = []
        self.auth: list[str] = []
        self.terminals: list[str] = []
        self.deleted: list[str] = []
        self.messages: list[list[Any]] = []
        self.refuse_terminals = 0
        self.app = self._build()

    def add(self, job_id: str, **fields: Any) -> dict[str, Any]:
        view = job_json(job_id, **fields)
        if view["kind"] == "notebook" and view["phase"] == "running" and "url" not in fields:
            view["url"] = self.lab(job_id)
        self.views[job_id] = view
        return view

    def lab(self, job_id: str) -> str:
        return f"{self.url}/nb/{job_id}/lab"

    def _advance(self, job_id: str) -> None:
        left = self.countdown.get(job_id)
        if left is None:
            return
        view = self.views[job_id]
        if left <= 1:
            view.update(phase="running", url=self.lab(job_id), reason="")
            del self.countdown[job_id]
        else:
            view.update(phase="running" if left == 2 else "pending")
            self.countdown[job_id] = left - 1

    def _build(self) -> FastAPI:
        api = FastAPI()

        def missing(job_id: str) -> Response:
            return Response(json.dumps({"detail": f"no job {job_id}"}), 404,
                            media_type="application/json")

        @api.get("/api/v1/jobs")
        def listing(request: Request) -> Response:
            query = {k: request.query_params.getlist(k) for k in request.query_params}
            self.queries.append(query)
            rows = sorted(self.views.values(), key=lambda v: -int(v["id"]))
            if "kind" in query:
                rows = [v for v in rows if v["kind"] in query["kind"]]
            if "phase" in query:
                rows = [v for v in rows if v["phase"] in query["phase"]]
            if "name" in query:
                rows = [v for v in rows if v["name"] in query["name"]]
            start = int(query.get("cursor", ["0"])[0])
            size = int(query.get("limit", ["1000"])[0])
            page = rows[start:start + size]
            more = {"X-Next-Cursor": str(start + size)} if start + size < len(rows) else {}
            return Response(json.dumps(page), 200, headers=more, media_type="application/json")

        @api.get("/api/v1/jobs/{job_id}")
        def one(job_id: str) -> Any:
            if job_id not in self.views:
                return missing(job_id)
            self._advance(job_id)
            return self.views[job_id]

        @api.post("/api/v1/jobs", status_code=201)
        async def create(request: Request) -> Any:
            body = await request.json()
            self.posted.append(body)
            live = [v for v in self.views.values() if v["name"] == body.get("name")
                    and v["phase"] not in ("succeeded", "failed", "cancelled")]
            if body.get("kind") == "notebook" and live:
                return Response(json.dumps({"detail": f"a notebook named {body['name']} "
                                            "is already live in team default"}), 409,
                                media_type="application/json")
            job_id = str(max([int(i) for i in self.views] or [0]) + 1)
            view = job_json(job_id, name=body.get("name") or f"notebook-{job_id}",
                            phase="pending", kind=body.get("kind", "job"),
                            reason="waiting for a GPU share of 0.25")
            view["spec"] = body
            self.views[job_id] = view
            self.countdown[job_id] = self.ready_after
            return view

        @api.post("/api/v1/jobs/{job_id}/{action}")
        def act(job_id: str, action: str) -> Any:
            view = self.views.get(job_id)
            if view is None:
                return missing(job_id)
            if action == "open":
                return {"url": f"{self.url}/nb/{job_id}/signin?once=s3cret"}
            if action == "resume" and view["phase"] != "suspended":
                return Response(json.dumps({"detail": f"notebook {job_id} is not suspended"}),
                                409, media_type="application/json")
            changes: dict[str, dict[str, Any]] = {
                "suspend": {"phase": "suspended", "url": None, "idle_since": None},
                "resume": {"phase": "pending"}, "cancel": {"phase": "cancelled"}}
            view.update(changes[action])
            if action == "resume":
                self.countdown[job_id] = self.ready_after
            return Response(json.dumps(view), 202, media_type="application/json")

        @api.post("/nb/{job_id}/api/terminals")
        def new_terminal(job_id: str, request: Request) -> Any:
            self.auth.append(request.headers.get("authorization", ""))
            if self.refuse_terminals:
                return Response(json.dumps({"detail": "not your notebook"}),
                                self.refuse_terminals, media_type="application/json")
            name = str(len(self.terminals) + 1)
            self.terminals.append(f"{job_id}/{name}")
            return {"name": name}

        @api.delete("/nb/{job_id}/api/terminals/{name}", status_code=204)
        def drop_terminal(job_id: str, name: str) -> None:
            self.deleted.append(f"{job_id}/{name}")

        @api.websocket("/nb/{job_id}/terminals/websocket/{name}")
        async def terminal_socket(websocket: WebSocket, job_id: str, name: str) -> None:
            self.auth.append(websocket.headers.get("authorization", ""))
            await websocket.accept()
            await websocket.send_text(json.dumps(["setup", {}]))
            pending = ""
            while True:
                try:
                    message = json.loads(await websocket.receive_text())
                except WebSocketDisconnect:
                    return
                self.messages.append(message)
                if message[0] != "stdin":
                    continue
                pending += message[1]
                while "\n" in pending or "\x04" in pending:
                    line, _, pending = pending.partition("\n")
                    if line.startswith("\x04"):
                        line = "exit"
                    await websocket.send_text(json.dumps(["stdout", f"$ {line}\r\n"]))
                    for command in line.split(";"):
                        command = command.strip()
                        if command.startswith("echo "):
                            await websocket.send_text(json.dumps(["stdout",
                                                                  command[5:] + "\r\n"]))
                        elif command == "exit":
                            await websocket.send_text(json.dumps(["disconnect", 1]))
                            await websocket.close()
                            return

        return api


@contextlib.contextmanager
def serve() -> Iterator[FakePool]:
    """A new FakePool served over HTTP on 127.0.0.1 (``url``) until the block ends."""
    pool = FakePool()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    pool.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    http = uvicorn.Server(uvicorn.Config(pool.app, log_level="warning", log_config=None))
    thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not http.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.005)
    try:
        yield pool
    finally:
        http.should_exit = True
        thread.join(timeout=30)
        sock.close()
