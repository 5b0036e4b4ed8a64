#!/usr/bin/env bash
# The main job: start the gpupool server on this machine (API on 127.0.0.1:8470, SQLite in
# ~/.gpupool or $GPUPOOL_HOME). On a machine without NVIDIA GPUs it declares 4 fake A100s
# so everything works on CPU. Creates .venv and installs gpupool on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
args=()
if [ -z "${GPUPOOL_FAKE_GPUS:-}" ] && ! .venv/bin/python -c "import pynvml; pynvml.nvmlInit()" 2>/dev/null; then
  echo "no NVIDIA GPU found: declaring 4 fake A100-80GB (set GPUPOOL_FAKE_GPUS to change)" >&2
  args+=(--fake-gpus 4xA100-80GB)
fi
exec .venv/bin/gpupool up "${args[@]}" "$@"
