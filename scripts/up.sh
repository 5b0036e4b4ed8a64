#!/usr/bin/env bash
# The main job: start the gpupool server on this machine (API on 127.0.0.1:8470, SQLite in
# ~/.gpupool or $GPUPOOL_HOME). On a machine without NVIDIA GPUs it declares 4 fake A100s
# so everything works on CPU. Creates .venv and installs gpupool on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  # jobs of other Unix accounts may run this venv's python: make it from a system Python
  if [ -x /usr/bin/python3 ]; then /usr/bin/python3 -m venv .venv; else python3 -m venv .venv; fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
# Jobs run in a bubblewrap sandbox where it is installed (`gpupool up` says whether they do).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v bwrap >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 || echo "bubblewrap could not be installed: jobs will not be sandboxed" >&2
fi
args=()
if [ -z "${GPUPOOL_FAKE_GPUS:-}" ] && ! .venv/bin/python -c "import pynvml; pynvml.nvmlInit()" 2>/dev/null; then
  echo "no NVIDIA GPU found: declaring 4 fake A100-80GB (set GPUPOOL_FAKE_GPUS to change)" >&2
  args+=(--fake-gpus 4xA100-80GB)
fi
exec .venv/bin/gpupool up "${args[@]}" "$@"
