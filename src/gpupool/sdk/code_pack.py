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
import json
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
FORMAT = 1
"""Bumped when the archive's layout changes: remembered digests of older layouts stop matching."""


class CodeError(ValueError):
    """The directory cannot be packed: missing, unreadable, or over the size limit."""


@dataclass(frozen=True, slots=True)
class Packed:
    """The archive (``data``), its ``digest`` (``sha256:<hex>``) and how many files it holds."""

    data: bytes
    digest: str
    files: int


@dataclass(frozen=True, slots=True)
class Listing:
    """What :func:`pack` would pack: the folder, its kept names, and a ``fingerprint`` of
    their names, sizes, times and modes (equal fingerprints: the same archive, so a client
    may reuse a digest it made before without packing again)."""

    root: Path
    names: tuple[str, ...]
    fingerprint: str


def listing(folder: str | Path, limit_mib: int = DEFAULT_LIMIT_MIB) -> Listing:
    """List ``folder`` (see the module). CodeError naming the folder when it is not a
    directory, or when its files exceed ``limit_mib`` (the message names the largest)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise CodeError(f"--code {folder}: not a directory")
    names = sorted(set(_kept(root)))
    stats = {n: (root / n).lstat() for n in names}
    total = sum(st.st_size for st in stats.values() if not stat.S_ISLNK(st.st_mode))
    if total > limit_mib << 20:
        biggest = sorted(names, key=lambda n: -stats[n].st_size)[:3]
        listed = ", ".join(f"{n} ({stats[n].st_size / 2**20:.1f} MiB)" for n in biggest)
        raise CodeError(f"--code {folder}: {total / 2**20:.1f} MiB of files is over the "
                        f"{limit_mib} MiB limit (largest: {listed}); list what the job does "
                        "not need in .gitignore, or raise the limit")
    seen = [[n, stats[n].st_size, stats[n].st_mtime_ns, stats[n].st_mode] for n in names]
    digest = hashlib.sha256(json.dumps([FORMAT, seen]).encode()).hexdigest()
    return Listing(root, tuple(names), digest)


def pack(folder: str | Path | Listing, limit_mib: int = DEFAULT_LIMIT_MIB) -> Packed:
    """Pack ``folder`` (see the module; a :class:`Listing` made before is used as is).
    CodeError as :func:`listing`, or when the archive itself exceeds ``limit_mib``."""
    found = folder if isinstance(folder, Listing) else listing(folder, limit_mib)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in found.names:
            info, path = _member(found.root, name)
            if path is None:
                tar.addfile(info)
                continue
            with path.open("rb") as f:
                tar.addfile(info, f)
    data = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)
    if len(data) > limit_mib << 20:
        raise CodeError(f"--code {found.root}: the archive is {len(data) / 2**20:.1f} MiB, "
                        f"over the {limit_mib} MiB limit")
    return Packed(data, "sha256:" + hashlib.sha256(data).hexdigest(), len(found.names))


def _member(root: Path, name: str) -> tuple[tarfile.TarInfo, Path | None]:
    """The member's header, and its file to read (None: a link)."""
    path = root / name
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
        return info, None
    info.size = st.st_size
    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info, path


def cache_file() -> Path:
    """Where this user's client remembers digests by fingerprint ($XDG_CACHE_HOME, else
    ~/.cache, /gpupool/code.json)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpupool" / "code.json"


def known(found: Listing) -> tuple[str, int, int] | None:
    """(digest, files, bytes) packed before for the same fingerprint, if remembered."""
    try:
        entry = json.loads(cache_file().read_text()).get(found.fingerprint)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str):
        return str(entry[0]), int(entry[1]), int(entry[2])
    return None


def remember(found: Listing, packed: Packed) -> None:
    """Remember the digest of ``found`` (the newest 200 trees; a cache that cannot be
    written is no error)."""
    path = cache_file()
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(entries, dict):
            entries = {}
        entries.pop(found.fingerprint, None)
        entries[found.fingerprint] = [packed.digest, packed.files, len(packed.data)]
        kept = dict(list(entries.items())[-200:])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, path)
    except (OSError, ValueError):
        pass


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
