"""Unpacking a job's code archive (``gpupool run --code``) into its attempt's directory, as
the job's own account: run as ``python -I -c <this file's text> DEST`` (or by its path) with
the archive on stdin,
started by the executor with the account's uid and gid, so whatever the archive holds can
only write where that account may.

The archive is checked before anything is written: regular files, directories and relative
symbolic links that stay inside DEST only (no absolute names, no ``..``, no hard links,
devices or FIFOs), at most :data:`MAX_FILES` members and :data:`MAX_BYTES` unpacked. Exit 0
on success; 2 with one line on stderr naming the member and the rule it breaks.

Standard library only, no package imports: it runs under ``-I`` by path, like the shim.
"""

from __future__ import annotations

import os
import posixpath
import sys
import tarfile

MAX_FILES = 200_000
MAX_BYTES = 4 << 30
"""Unpacked size cap: an archive of at most 100 MiB (the upload limit) that inflates past
this is refused rather than filling the disk."""


class UnsafeArchive(ValueError):
    pass


def check(members: list[tarfile.TarInfo]) -> None:
    """UnsafeArchive naming the first member that breaks a rule (see the module)."""
    if len(members) > MAX_FILES:
        raise UnsafeArchive(f"{len(members)} members, more than {MAX_FILES}")
    total = 0
    for m in members:
        name = m.name
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "\0" in name or not name.strip("/"):
            raise UnsafeArchive(f"{name!r}: names must be relative and stay inside")
        if m.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise UnsafeArchive(f"{name!r}: a link may only point inside the archive")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchive(f"{name!r}: only files, directories and links are unpacked")
        total += m.size
        if total > MAX_BYTES:
            raise UnsafeArchive(f"more than {MAX_BYTES >> 30} GiB once unpacked")


def unpack(archive: tarfile.TarFile, dest: str) -> int:
    """Check then write every member below ``dest`` (created 0700); files keep only their
    executable bits. Returns the number of files."""
    members = archive.getmembers()
    check(members)
    os.makedirs(dest, mode=0o700, exist_ok=True)
    files = 0
    for m in members:
        path = os.path.join(dest, m.name)
        parent = os.path.dirname(path)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        if os.path.realpath(parent) != parent and not os.path.realpath(parent).startswith(
                os.path.realpath(dest) + os.sep):
            raise UnsafeArchive(f"{m.name!r}: its folder is a link leading outside")
        if m.isdir():
            os.makedirs(path, mode=0o700, exist_ok=True)
        elif m.issym():
            os.symlink(m.linkname, path)
        else:
            source = archive.extractfile(m)
            assert source is not None
            mode = 0o700 if m.mode & 0o111 else 0o600
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            files += 1
    return files


def run(dest: str, source: object) -> int:
    """Unpack the gzip'd tar read from the binary file ``source`` into ``dest``; exit code."""
    try:
        with tarfile.open(fileobj=source, mode="r:gz") as archive:  # type: ignore[call-overload]
            unpack(archive, dest)
    except (UnsafeArchive, tarfile.TarError, OSError, EOFError) as exc:
        sys.stderr.write(f"gpupool: cannot unpack the job's code: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: code_unpack.py DEST < archive.tar.gz\n")
        sys.exit(2)
    import io

    sys.exit(run(sys.argv[1], io.BytesIO(sys.stdin.buffer.read())))
