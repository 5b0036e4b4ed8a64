"""``python -m gpupool.server.pipelines.masked_run SECRETS_JSON -- COMMAND...``: run a step's
command with its secrets in the environment and every secret masked in its output.

Steps that use secrets run under this wrapper, so the log written to disk (and served by the
jobs API too) never holds a secret. SECRETS_JSON (0600, in the step's attempt dir) is
``{"env": {NAME: value}, "mask": [term, ...]}``; it is kept for the attempt's lifetime (a
preempted job restarts the same attempt) and removed by the engine when the attempt ends.
Output is masked line by line (a secret split across lines is masked per line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

MASK = b"***"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: masked_run SECRETS_JSON -- COMMAND...", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        data = json.load(handle)
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in data.get("env", {}).items()})
    terms = sorted((str(t).encode() for t in data.get("mask", []) if t), key=len, reverse=True)
    try:
        child = subprocess.Popen(argv[2:], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
    except OSError as exc:
        print(f"cannot start {argv[2]!r}: {exc}", flush=True)
        return 127
    assert child.stdout is not None
    out = sys.stdout.buffer
    for line in iter(child.stdout.readline, b""):
        for term in terms:
            line = line.replace(term, MASK)
        out.write(line)
        out.flush()
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
