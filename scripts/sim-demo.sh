#!/usr/bin/env bash
# Compare the placement policies on the built-in synthetic trace,
# print the table and write the plot and JSON under out/. Creates .venv on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
mkdir -p out
.venv/bin/gpupool sim --plot out/sim.png --json out/sim.json "$@"
