"""The ``http`` step executor: one HTTP request, made by a worker thread of the server.

The answer is written atomically to ``result.json`` in the attempt dir. After a restart an
attempt without a result is sent again (at-least-once: make such endpoints idempotent).
Outputs: ``status`` (int) and ``body`` (text, at most 64 KiB). ``${{ secrets.X }}`` in
headers is resolved in the worker and never stored.

Before anything is sent, the URL passes the server's :class:`HttpGuard` (http_guard.py: no
loopback, link-local, unspecified or own address unless GPUPOOL_HTTP_ALLOW_HOSTS lists it);
a refused URL fails the step with kind ``error`` and a message naming the address and why.
The request then goes to the addresses that were checked (tried in order while a connection
cannot be made), redirects are not followed (a 3xx is the answer) and proxy environment
variables are ignored.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from gpupool.server.pipelines.dag import references, render
from gpupool.server.pipelines.http_guard import HttpGuard, RefusedUrl, Target
from gpupool.server.pipelines.secrets import mask, mask_terms
from gpupool.server.pipelines.steps import RUNNING, Attempt, Handle, Status, append_log

RESULT_FILE = "result.json"
MAX_BODY = 64 * 1024
DEFAULT_TIMEOUT_S = 30.0
SecretValues = Callable[[int, Iterable[str]], dict[str, str]]


class HttpSteps:
    """``guard`` decides which URLs may be called (default: :class:`HttpGuard` with no allow
    list, for a server on 127.0.0.1)."""

    def __init__(self, secret_values: SecretValues, guard: HttpGuard | None = None) -> None:
        self.secret_values = secret_values
        self.guard = guard or HttpGuard()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def create(self, attempt: Attempt) -> Handle:
        attempt.dir.mkdir(parents=True, exist_ok=True)
        assert attempt.http is not None
        return {"request": attempt.http, "timeout_s": attempt.step.timeout_s or DEFAULT_TIMEOUT_S}

    def start(self, attempt: Attempt, handle: Handle) -> Handle:
        key = str(attempt.dir)
        with self._lock:
            alive = key in self._threads and self._threads[key].is_alive()
            if not alive and not (attempt.dir / RESULT_FILE).exists():
                thread = threading.Thread(target=self._call, args=(attempt, handle),
                                          name=f"pipeline-http-{attempt.run_id}", daemon=True)
                self._threads[key] = thread
                thread.start()
        return {**handle, "started": True}

    def _call(self, attempt: Attempt, handle: Handle) -> None:
        request: dict[str, Any] = handle["request"]
        terms: list[str] = []
        result: dict[str, Any]
        try:
            target = self.guard.check(request["url"])
            names = [e.split(".", 1)[1] for v in request["headers"].values()
                     for e in _secret_refs(v)]
            values = self.secret_values(attempt.principal.team_id, names)
            terms = mask_terms(values.values())
            secrets = {f"secrets.{k}": v for k, v in values.items()}
            headers = {k: render(v, secrets) for k, v in request["headers"].items()}
            body = request.get("body")
            kwargs: dict[str, Any] = {"headers": headers}
            if isinstance(body, str):
                kwargs["content"] = body.encode()
            elif body is not None:
                kwargs["json"] = body
            answer = _send(target, request["method"], float(handle["timeout_s"]), kwargs)
            text = answer.text[:MAX_BODY]
            result = {"status": answer.status_code, "body": mask(text, terms)}
            append_log(attempt, mask(f"{request['method']} {request['url']} -> "
                                     f"{answer.status_code}\n{text[:4096]}", terms))
        except RefusedUrl as exc:
            result = {"error": f"http step '{attempt.step.name}': {exc}", "kind": "error"}
            append_log(attempt, f"{request['method']} {request['url']} refused: {exc}")
        except Exception as exc:  # any failure of the call is the step's failure
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "failure"
            result = {"error": mask(f"{type(exc).__name__}: {exc}", terms), "kind": kind}
            append_log(attempt, f"{request['method']} {request['url']} failed: {result['error']}")
        tmp = attempt.dir / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, attempt.dir / RESULT_FILE)

    def status(self, attempt: Attempt, handle: Handle) -> Status:
        path = attempt.dir / RESULT_FILE
        if not path.exists():
            self.start(attempt, handle)  # after a restart: the call is sent again
            return RUNNING
        result = json.loads(path.read_text())
        if "error" in result:
            return Status("failed", result.get("kind", "failure"), result["error"])
        expect = handle["request"].get("expect_status") or []
        code = int(result["status"])
        ok = code in expect if expect else 200 <= code < 300
        outputs = {"status": code, "body": result["body"]}
        if ok:
            return Status("succeeded", message=f"HTTP {code}", outputs=outputs)
        return Status("failed", "failure", f"HTTP {code} (expected "
                      f"{expect or '2xx'})", outputs=outputs)

    def stop(self, attempt: Attempt, handle: Handle) -> None:
        """The request cannot be withdrawn; its answer is ignored."""

    def delete(self, attempt: Attempt, handle: Handle) -> None:
        with self._lock:
            self._threads.pop(str(attempt.dir), None)


def _send(target: Target, method: str, timeout: float, kwargs: dict[str, Any]) -> httpx.Response:
    """The answer from the first checked address that accepts a connection."""
    headers = target.headers(kwargs.pop("headers"))
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for address in target.addresses[:-1]:
            try:
                return client.request(method, target.url_for(address), headers=headers,
                                      extensions=target.extensions, **kwargs)
            except httpx.ConnectError:
                continue
        return client.request(method, target.url_for(target.addresses[-1]), headers=headers,
                              extensions=target.extensions, **kwargs)


def _secret_refs(text: str) -> list[str]:
    return [e for e in references(text) if e.startswith("secrets.")]
