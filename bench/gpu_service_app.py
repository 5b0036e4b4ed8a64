"""The replica of the GPU acceptance services section (bench/gpu_services.py): a small
PyTorch model (an MLP, 4 layers of 2048, fp16 on CUDA) behind ``GET /infer``, one forward
pass of a batch of 8 per request; ``GET /healthz`` once the model is loaded and warmed up.
Without torch or CUDA (a dry run) the same pass runs with numpy on the CPU and ``/healthz``
says ``"device": "cpu"``. Stdlib HTTP server on 127.0.0.1:$PORT.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WIDTH, LAYERS, BATCH = 2048, 4, 8


def _model():  # type: ignore[no-untyped-def]
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("no CUDA")
        layers = []
        for _ in range(LAYERS):
            layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()]
        net = torch.nn.Sequential(*layers).half().cuda().eval()
        x = torch.randn(BATCH, WIDTH, device="cuda", dtype=torch.half)

        def forward() -> float:
            with torch.inference_mode():
                out = net(x)
                torch.cuda.synchronize()
                return float(out[0, 0])

        forward()
        return forward, f"cuda:{torch.cuda.get_device_name(0)}"
    except ImportError:
        import numpy as np

        rng = np.random.default_rng(0)
        weights = [rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / 64
                   for _ in range(LAYERS)]
        x = rng.standard_normal((BATCH, WIDTH), dtype=np.float32)

        def forward() -> float:
            h = x
            for w in weights:
                h = np.maximum(h @ w, 0)
            return float(h[0, 0])

        return forward, "cpu"


FORWARD, DEVICE = _model()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body are two writes: with Nagle on, the body of each kept-alive answer
    # waited for the client's delayed ACK (~40 ms)
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/infer"):
            self._json({"y": FORWARD(), "device": DEVICE})
        else:
            self._json({"ok": True, "device": DEVICE})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
