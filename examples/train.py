"""A stand-in training job for trying gpupool: it prints what the scheduler gave it, then
one line per step (0.5 s each by default), long enough to watch in `gpupool ps` and
`gpupool logs -f`. Runs on CPU; no framework needed.

    python train.py --steps 20 [--step-seconds 0.5] [--fail-at N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--fail-at", type=int, default=0, help="exit 1 at this step (0: never)")
    args = parser.parse_args()
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES") or ""
    share = os.environ.get("GPUPOOL_GPU_FRACTION")
    given = f"GPUs {gpus}" + (f", a {share} share" if share else "") if gpus else "no GPU"
    print(f"job {os.environ.get('GPUPOOL_JOB_ID', '?')}: {given}", flush=True)
    loss = 1.0
    for step in range(1, args.steps + 1):
        time.sleep(args.step_seconds)
        if step == args.fail_at:
            print(f"step {step}: loss is NaN, giving up", file=sys.stderr, flush=True)
            return 1
        loss *= 0.9
        print(f"step {step}/{args.steps} loss {loss:.4f}", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
