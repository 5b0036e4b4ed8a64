#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy on the core and plugins), layer contracts
# (import-linter), then pytest. Creates .venv and installs what it needs on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy (strict, the whole package)"
.venv/bin/mypy src/gpupool
echo "== import-linter (layers of ARCHITECTURE.md)"
.venv/bin/lint-imports
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
