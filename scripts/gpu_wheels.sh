#!/usr/bin/env bash
# Wheels for the GPU acceptance run (bench/gpu_acceptance.py) on a machine with no package
# registry: Python 3.12, x86_64, with PyTorch, numpy and friends already installed.
#
#   scripts/gpu_wheels.sh [fetch] [--no-notebooks]   # here: download the wheels into .whl/
#   scripts/gpu_wheels.sh install [DIR]              # there: a venv at DIR (default /tmp/gv)
#
# fetch: every package gpupool needs at run time (pyproject's dependencies, their own needs,
# the notebook extra's JupyterLab and pytest for tests/server_harness.py), at the version
# installed in .venv (read from its metadata, as `.venv/bin/pip freeze` lists it), for
# CPython 3.12 manylinux x86_64, with `pip download --no-deps --only-binary=:all:`. Left
# out, because the GPU machine has them or gpupool does not import them at run time:
# numpy, the plotting stack (matplotlib, pillow, fonttools, kiwisolver, contourpy, cycler,
# pyparsing), the PostgreSQL driver (psycopg), uvloop (there already, optional, large),
# and the notebook kernel's optional debugger and completion (debugpy, jedi, parso).
# --no-notebooks also leaves out JupyterLab and what only it needs (about 40 MiB): the
# notebooks section is then skipped there. The working tree and .whl/ travel together and
# must stay under 64 MiB: the script says how much that is.
#
# install: `python3 -m venv --without-pip DIR`, the wheels installed into it with the
# machine's pip (`--prefix DIR --ignore-installed`: JupyterLab's data files land in
# DIR/share), and a .pth file that puts this checkout's src/ and python3's own
# site-packages (torch, numpy, …) after the wheels on its sys.path. Jobs and notebooks run
# with that venv's python, so they see the same packages. The device command
# (bench/gpu_acceptance.py's docstring and README's Figures section say the same):
#
#   run(carry=[".whl"], timeout_s=600, command="bash scripts/gpu_wheels.sh install /tmp/gv
#       && PYTHONUNBUFFERED=1 /tmp/gv/bin/python bench/gpu_acceptance.py --out $OUT
#       --budget 500")
#
# The interposer is C and is compiled there by gpupool itself (gpupool.interposer.build) with
# the machine's cc/gcc; where there is none, the interposer and overhead sections are
# skipped with the build's reason.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHL=.whl

fetch() {
    local notebooks=1
    [[ "${1:-}" == "--no-notebooks" ]] && notebooks=0
    local py=.venv/bin/python
    [[ -x $py ]] || { echo "no .venv here: make it first (pip install -e '.[dev]')" >&2; exit 1; }
    local list
    list=$(mktemp)
    NOTEBOOKS=$notebooks "$py" - >"$list" <<'EOF'
import importlib.metadata as md
import os
import re

from packaging.requirements import Requirement
from packaging.markers import default_environment

LEAVE = {"numpy", "matplotlib", "pillow", "fonttools", "kiwisolver", "contourpy", "cycler",
         "pyparsing", "psycopg", "psycopg-binary", "uvloop", "debugpy", "jedi",
         "parso", "torch"}
env = default_environment() | {"python_version": "3.12", "python_full_version": "3.12.3",
                               "platform_machine": "x86_64", "sys_platform": "linux"}
roots = ["gpupool", "pytest"] + (["jupyterlab"] if os.environ["NOTEBOOKS"] == "1" else [])


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


found = {}
todo = [(r, ()) for r in roots]
while todo:
    name, extras = todo.pop()
    dist = md.distribution(name)
    key = norm(dist.metadata["Name"])
    if key != "gpupool":
        found[key] = dist.version
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is not None and not any(
                req.marker.evaluate(env | {"extra": e}) for e in (extras or ("",))):
            continue
        dep = norm(req.name)
        if dep in LEAVE or dep in found:
            continue
        found[dep] = "?"
        todo.append((req.name, tuple(req.extras)))
for key in sorted(found):
    print(f"{key}=={md.version(key)}")
EOF
    rm -rf "$WHL"
    mkdir -p "$WHL"
    "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
        -d "$WHL" -r "$list" 2> >(grep -v "^WARNING: Location .* is ignored" >&2)
    local want got
    want=$(wc -l <"$list")
    got=$(find "$WHL" -type f -name '*.whl' | wc -l)
    rm -f "$list"
    if [[ $want != "$got" ]]; then
        echo "asked for $want wheels, got $got" >&2
        exit 1
    fi
    local wheels tree
    wheels=$(du -sb "$WHL" | cut -f1)
    tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null \
        | tail -1 | cut -f1)
    echo "$got wheels in $WHL: $((wheels / 1048576)) MiB; with the working tree" \
        "$(((wheels + tree) / 1048576)) MiB of the 64 MiB that may travel"
    if (((wheels + tree) > 60 * 1048576)); then
        echo "too close to 64 MiB: try --no-notebooks" >&2
        exit 1
    fi
}

install() {
    local dir=${1:-/tmp/gv}
    local py
    py=$(command -v python3)
    ls "$WHL"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHL: carry it" >&2; exit 1; }
    rm -rf "$dir"
    # --copies: jobs get this python only where every account can reach its binary
    # (gpupool.executors.interpreter.job_python); a link into /root would not do
    "$py" -m venv --without-pip --copies "$dir"
    # pip runs inside the new venv (--python): the venv's own install scheme, JupyterLab's
    # data files under DIR/share
    "$py" -m pip --python "$dir/bin/python" install -q --disable-pip-version-check \
        --no-index --no-deps --no-compile --no-warn-script-location \
        --root-user-action=ignore --ignore-installed "$WHL"/*.whl
    # after the wheels on the venv's sys.path: this checkout's src/, then every directory
    # python3 itself imports from that the venv lacks (torch, numpy, …; python3 may itself
    # be a venv)
    local site
    site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$py" - "$dir/bin/python" "$ROOT/src" >"$site/gpupool-device.pth" <<'PY'
import os, subprocess, sys
inner = subprocess.run([sys.argv[1], "-c", "import sys; print(chr(10).join(sys.path))"],
                       capture_output=True, text=True, check=True).stdout.splitlines()
print(sys.argv[2])
for path in sys.path:
    if path and os.path.isdir(path) and path not in inner:
        print(path)
PY
    "$dir/bin/python" -c 'import fastapi, sqlalchemy, uvicorn, gpupool, sys
print("gpupool venv ready:", sys.executable, "python", sys.version.split()[0])'
}

case "${1:-fetch}" in
    fetch) shift || true; fetch "$@" ;;
    --no-notebooks) fetch --no-notebooks ;;
    install) shift; install "$@" ;;
    *) echo "usage: $0 [fetch [--no-notebooks] | install [DIR]]" >&2; exit 2 ;;
esac
