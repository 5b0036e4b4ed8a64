"""Packing a job attempt's declared artifacts (``artifacts: [model/, metrics.json]``) as the
job's own account: run as ``python -I -c <this file's text> BASE LIMIT PATH...`` with that
account's uid and gid, it writes a gzip'd tar of each PATH (relative to BASE, the job's
working directory) to stdout. Running as the account, it can only read what the job could;
symbolic links are never followed: a link among the packed names is stored as a link, one
leading outside them (absolute, or up past BASE) is left out and reported.

A PATH that is absolute, holds ``..`` or does not exist is reported, not packed. Exit 0 when
everything was packed, its last line on stderr a JSON summary ``{"files": [[name, size],
...], "missing": [...]}``; 3 with one line on stderr when the files pass LIMIT bytes (the
archive is then incomplete and must be dropped); 2 for a bad call or an unreadable file.

Standard library only, no package imports: it runs under ``-I``, like the shim.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
from typing import Any

OVER_LIMIT = 3


class OverLimit(Exception):
    pass


def _members(base: str, path: str) -> list[str]:
    """Every name under ``path`` (relative to ``base``), the path itself first; links and
    files are leaves (a link to a folder is not walked)."""
    full = os.path.join(base, path)
    if os.path.islink(full) or not os.path.isdir(full):
        return [path]
    found = [path]
    for folder, dirs, files in os.walk(full, followlinks=False):
        rel = os.path.relpath(folder, base)
        for name in sorted(dirs) + sorted(files):
            found.append(os.path.join(rel, name))
        dirs.sort()
    return found


def _inside(name: str, target: str) -> bool:
    """A link at ``name`` to ``target`` stays among the packed names."""
    if target.startswith("/"):
        return False
    resolved = os.path.normpath(os.path.join(os.path.dirname(name), target))
    return resolved != ".." and not resolved.startswith("../")


def pack(base: str, limit: int, paths: list[str], out: object) -> dict[str, list[Any]]:
    """Write the archive of ``paths`` to the binary file ``out``; the summary. OverLimit
    once the files' bytes pass ``limit``."""
    files: list[list[object]] = []
    missing: list[str] = []
    total = 0
    with tarfile.open(fileobj=out, mode="w|gz") as tar:  # type: ignore[call-overload]
        for raw in paths:
            path = os.path.normpath(raw.strip("/")) if raw.strip("/") else ""
            if not path or raw.startswith("/") or path == ".." or path.startswith("../"):
                missing.append(raw)
                continue
            if not os.path.lexists(os.path.join(base, path)):
                missing.append(raw)
                continue
            for name in _members(base, path):
                full = os.path.join(base, name)
                info = tar.gettarinfo(full, arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isfile():
                    total += info.size
                    if total > limit:
                        raise OverLimit(f"the artifacts pass {limit >> 20} MiB at {name}")
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                    files.append([name, info.size])
                elif info.issym() and not _inside(name, info.linkname):
                    missing.append(f"{name} (a link leading outside: not kept)")
                elif info.isdir() or info.issym():
                    tar.addfile(info)
    return {"files": files, "missing": missing}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[1].isdigit():
        sys.stderr.write("usage: artifact_pack.py BASE LIMIT PATH...\n")
        return 2
    base, limit, paths = argv[0], int(argv[1]), argv[2:]
    try:
        summary = pack(base, limit, paths, sys.stdout.buffer)
    except OverLimit as exc:
        sys.stderr.write(f"{exc}\n")
        return OVER_LIMIT
    except OSError as exc:
        sys.stderr.write(f"cannot pack the artifacts: {exc}\n")
        return 2
    sys.stderr.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
