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
# The console tests drive Debian's chromium; install it when we may (root with apt-get),
# and never fail the run over it: without it those tests are skipped, saying why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  command -v chromium >/dev/null || { (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "chromium could not be installed: console tests will be skipped"; }
fi
.venv/bin/python -m pytest -q "$@"
