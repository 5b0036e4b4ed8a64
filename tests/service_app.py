"""The HTTP server command the service tests deploy (stdlib only, plus numpy when the
interpreter has it): a tiny "model" behind ``/predict``, and what the tests need to see
which replica answered.

Routes: ``GET /healthz`` 200; ``GET /work?ms=N`` sleeps N ms, answers
``{"pid", "port", "model", "path", "prefix"}`` (the pid is the sandbox's own: the port
tells replicas apart); ``POST /predict`` with a JSON list of numbers
answers their product with a fixed matrix (numpy) as ``{"y": [...], "pid", "model"}``;
``GET /stream`` sends three chunks a little apart. Listens on 127.0.0.1:$PORT.
"""

from __future__ import annotations

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    import numpy as np
except ImportError:  # the interpreter has no numpy: the same product by hand
    np = None  # type: ignore[assignment]

WEIGHTS = [[0.5, -1.0], [2.0, 0.25]]
MODEL = os.environ.get("MODEL", "v1")
PORT = int(os.environ.get("PORT", "0"))


def predict(x: list[float]) -> list[float]:
    if np is not None:
        return [float(v) for v in np.asarray(WEIGHTS) @ np.asarray(x, dtype=float)]
    return [sum(w * v for w, v in zip(row, x, strict=True)) for row in WEIGHTS]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body are two writes: with Nagle on, the body of each kept-alive answer
    # waited for the client's delayed ACK (~40 ms)
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/healthz":
            self._json(200, {"ok": True})
        elif parts.path == "/work":
            ms = float(parse_qs(parts.query).get("ms", ["0"])[0])
            time.sleep(ms / 1000)
            self._json(200, {"pid": os.getpid(), "port": PORT, "model": MODEL,
                             "path": self.path,
                             "prefix": self.headers.get("X-Forwarded-Prefix")})
        elif parts.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for n in range(3):
                chunk = f"data: {n}\n\n".encode()
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._json(404, {"detail": "no such path"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        x = json.loads(self.rfile.read(length) or b"[]")
        self._json(200, {"y": predict(x), "pid": os.getpid(), "model": MODEL})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
