"""A training job of the GPU acceptance run: a fixed training step on synthetic data, timed
(standard library + torch only; it runs as a gpupool job, or directly).

    python gpu_train.py --model resnet50 --batch 64 --size 224 --warmup 10 --steps 20 --windows 3
    python gpu_train.py --model small --batch 128 --size 32 --warmup 20 --steps 400 --windows 1

``resnet50``: the ResNet-50 layout (bottleneck blocks 3-4-6-3, 25.6 M parameters) written
here with torch.nn (torchvision may be absent); ``small``: a light convnet that uses a fraction
of a card. Each step: forward under bf16 autocast (on CUDA), cross-entropy, backward, SGD with
momentum. After ``warmup`` steps, ``windows`` windows of ``steps`` steps are timed (the device
synchronised at each end).

Prints one line ``GPUACC {json}``: ``device`` (``cuda``, or ``cpu`` when torch sees no CUDA:
the caller then chose toy sizes, and the figures only prove the plumbing), ``step_ms`` (the
median window's time per step), ``steps_per_s`` and ``images_per_s`` over all timed steps,
``train_s`` (warm-up included), ``process_s`` (since this process started, torch's import
included), and ``mem`` (``torch.cuda.mem_get_info`` in MiB: under a memory limit the total is
the limit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

STARTED = time.perf_counter()
MARK = "GPUACC "
MIB = 1 << 20


def resnet50(classes: int = 1000) -> Any:
    """ResNet-50: a 7×7 stem, four stages of bottleneck blocks (3, 4, 6, 3; widths 64 to 512,
    expansion 4), global average pooling and a linear classifier."""
    import torch.nn as tnn

    class Bottleneck(tnn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            out = width * 4
            self.body = tnn.Sequential(
                tnn.Conv2d(cin, width, 1, bias=False), tnn.BatchNorm2d(width), tnn.ReLU(True),
                tnn.Conv2d(width, width, 3, stride, 1, bias=False), tnn.BatchNorm2d(width),
                tnn.ReLU(True), tnn.Conv2d(width, out, 1, bias=False), tnn.BatchNorm2d(out))
            self.skip = (tnn.Identity() if stride == 1 and cin == out else tnn.Sequential(
                tnn.Conv2d(cin, out, 1, stride, bias=False), tnn.BatchNorm2d(out)))
            self.relu = tnn.ReLU(True)

        def forward(self, x: Any) -> Any:
            return self.relu(self.body(x) + self.skip(x))

    layers: list[Any] = [tnn.Conv2d(3, 64, 7, 2, 3, bias=False), tnn.BatchNorm2d(64),
                            tnn.ReLU(True), tnn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(cin, classes)]
    return tnn.Sequential(*layers)


def small(classes: int = 10) -> Any:
    """A light convnet (about 0.3 M parameters) for 32×32 images."""
    import torch.nn as tnn

    return tnn.Sequential(
        tnn.Conv2d(3, 32, 3, padding=1), tnn.ReLU(True), tnn.Conv2d(32, 64, 3, padding=1),
        tnn.ReLU(True), tnn.MaxPool2d(2), tnn.Conv2d(64, 128, 3, padding=1), tnn.ReLU(True),
        tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(128, 256), tnn.ReLU(True),
        tnn.Linear(256, classes))


MODELS = {"resnet50": (resnet50, 1000), "small": (small, 10)}


def train(model_name: str, batch: int, size: int, warmup: int, steps: int,
          windows: int) -> dict[str, object]:
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    build, classes = MODELS[model_name]
    model = build(classes).to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, size, size, device=device)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model(images), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(windows):
        w0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append(time.perf_counter() - w0)
    timed = sum(times)
    found: dict[str, object] = {
        "device": device, "torch": torch.__version__, "model": model_name, "batch": batch,
        "size": size, "steps": steps * windows,
        "step_ms": round(statistics.median(times) / steps * 1000, 3),
        "windows_ms": [round(t / steps * 1000, 3) for t in times],
        "steps_per_s": round(steps * windows / timed, 2),
        "images_per_s": round(steps * windows * batch / timed, 1),
        "train_s": round(time.perf_counter() - t0, 3)}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        found["mem"] = {"total_mib": total // MIB, "free_mib": free // MIB}
        found["gpu"] = torch.cuda.get_device_name(0)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    found = train(args.model, args.batch, args.size, args.warmup, args.steps, args.windows)
    found["process_s"] = round(time.perf_counter() - STARTED, 3)
    print(MARK + json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
