#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy on the core and plugins), layer contracts
# (import-linter), then pytest. Creates .venv and installs what it needs on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  # Jobs of other Unix accounts run this interpreter: make the venv from a system Python they
  # can execute (this machine's default python3 may live under /root, mode 0700).
  if [ -x /usr/bin/python3 ]; then /usr/bin/python3 -m venv .venv; else python3 -m venv .venv; fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy (strict, the whole package)"
.venv/bin/mypy src/gpupool
echo "== import-linter (layers of ARCHITECTURE.md)"
.venv/bin/lint-imports
echo "== mkdocs (the user guide in docs/guide; strict: a broken link fails)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict  # into site/ (git-ignored); not --quiet: it hides the warnings strict counts
echo "== pytest"
# The console tests drive Debian's chromium, the isolation tests bubblewrap, the image tests
# podman (with runc, busybox-static for the image they build, and Debian's docker-registry
# with apache2-utils' htpasswd for the registry-login test); install them when we may
# (root with apt-get), and never fail the run over it: without them those tests are skipped,
# saying why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  command -v chromium >/dev/null || missing="$missing chromium"
  command -v bwrap >/dev/null || missing="$missing bubblewrap"
  command -v podman >/dev/null || missing="$missing podman"
  command -v runc >/dev/null || missing="$missing runc"
  [ -x /bin/busybox ] || missing="$missing busybox-static"
  command -v docker-registry >/dev/null || missing="$missing docker-registry"
  command -v htpasswd >/dev/null || missing="$missing apache2-utils"
  if [ -n "$missing" ]; then
    (apt-get update -qq && apt-get install -y -qq $missing) >/dev/null 2>&1 || echo "could not install$missing: the tests that need it will be skipped"
  fi
fi
# Two workers, each taking whole files (module-scoped servers and clusters stay in one
# worker): most tests wait on servers and subprocesses, so two run in about the time of one.
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
