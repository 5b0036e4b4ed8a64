"""Packing a directory for ``gpupool run --code DIR``: the files a job needs, as one archive
whose name is its content's SHA-256 (a second submit of the same tree uploads nothing).

What is packed: every regular file and symbolic link under DIR that git would track (what
``.gitignore`` files, ``.git/info/exclude`` and git's global excludes leave, asked of git
when DIR is in a git work tree), else what DIR's ``.gitignore`` files leave (read with
pathspec, each applying below its own directory); ``.git`` itself never. The archive is
byte-for-byte the same for the same tree: sorted names, no owners, fixed times, modes 0644
or 0755 (executable bits kept), gzip without a timestamp.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathspec

DEFAULT_LIMIT_MIB = 100
FIXED_MTIME = 1_000_000_000  # 2001-09-09: a fixed time, late enough for every tool


class CodeError(ValueError):
    """The directory cannot be packed: missing, unreadable, or over the size limit."""


@dataclass(frozen=True, slots=True)
class Packed:
    """The archive (``data``), its ``digest`` (``sha256:<hex>``) and how many files it holds."""

    data: bytes
    digest: str
    files: int


def pack(folder: str | Path, limit_mib: int = DEFAULT_LIMIT_MIB) -> Packed:
    """Pack ``folder`` (see the module). CodeError naming the folder when it is not a
    directory, or when the files (before compression) or the archive exceed ``limit_mib``
    (the message names the largest files)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise CodeError(f"--code {folder}: not a directory")
    names = sorted(set(_kept(root)))
    limit = limit_mib * 1024 * 1024
    sizes = {n: (root / n).lstat().st_size for n in names}
    total = sum(sizes[n] for n in names if not (root / n).is_symlink())
    if total > limit:
        biggest = sorted(names, key=lambda n: -sizes[n])[:3]
        listed = ", ".join(f"{n} ({sizes[n] / 2**20:.1f} MiB)" for n in biggest)
        raise CodeError(f"--code {folder}: {total / 2**20:.1f} MiB of files is over the "
                        f"{limit_mib} MiB limit (largest: {listed}); list what the job does "
                        "not need in .gitignore, or raise the limit")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            tar.addfile(*_member(root, name))
    data = gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)
    if len(data) > limit:
        raise CodeError(f"--code {folder}: the archive is {len(data) / 2**20:.1f} MiB, over "
                        f"the {limit_mib} MiB limit")
    return Packed(data, "sha256:" + hashlib.sha256(data).hexdigest(), len(names))


def _member(root: Path, name: str) -> tuple[tarfile.TarInfo, io.BufferedReader | None]:
    path = root / name
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
        return info, None
    info.size = st.st_size
    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info, path.open("rb")


def _kept(root: Path) -> Iterator[str]:
    """Relative names of the regular files and links to pack (POSIX separators)."""
    listed = _git_listed(root)
    if listed is not None:
        for name in listed:
            path = root / name
            if path.is_symlink() or path.is_file():
                yield name
        return
    yield from _walk_ignoring(root)


def _git_listed(root: Path) -> list[str] | None:
    """What git tracks or would track under ``root``, or None when git is not there or
    ``root`` is not in a work tree."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        inside = subprocess.run([git, "-C", str(root), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True, timeout=30, check=False)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        found = subprocess.run([git, "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard", "--", "."],
                               capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if found.returncode != 0:
        return None
    return [n for n in found.stdout.decode("utf-8", "surrogateescape").split("\0")
            if n and not n.startswith(".git/")]


def _walk_ignoring(root: Path) -> Iterator[str]:
    """The files under ``root`` that its ``.gitignore`` files leave (no git)."""
    import pathspec

    specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        ignore = Path(folder) / ".gitignore"
        if ignore.is_file():
            specs.append((rel, pathspec.GitIgnoreSpec.from_lines(
                ignore.read_text(errors="replace").splitlines())))

        dirs[:] = sorted(d for d in dirs if d != ".git" and not _ignored(specs, rel + d + "/")
                         and not (Path(folder) / d).is_symlink())
        links = [d for d in os.listdir(folder) if (Path(folder) / d).is_symlink()
                 and (Path(folder) / d).is_dir()]
        for name in sorted([*files, *links]):
            if not _ignored(specs, rel + name):
                yield rel + name


def _ignored(specs: list[tuple[str, pathspec.GitIgnoreSpec]], name: str) -> bool:
    """``name`` (relative to the root; a folder ends in /) is ignored by a .gitignore above
    it."""
    return any(name.startswith(base) and spec.match_file(name[len(base):])
               for base, spec in specs)


@dataclass(frozen=True, slots=True)
class CodeUpload:
    """What ``Client.upload_code`` did: the archive's ``digest`` (give it as a job's
    ``code``), how many files and bytes it holds, and whether it was sent (False: the team
    had it already)."""

    digest: str
    files: int
    size: int
    uploaded: bool
