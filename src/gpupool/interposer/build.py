"""Build the interposer, ``libgpushare.so``, from the C source shipped in this package.

The C source (four .c files and three headers) is package data. The package's normal install
compiles it with the machine's C compiler into ``gpupool/interposer/lib`` (setup.py's build
hook; a failure leaves it out without failing the install). Where that library is missing,
it is compiled the first time it is needed (``gpupool up``, a Ray node's agent) and cached
under ``$GPUPOOL_HOME/lib`` (default ``~/.gpupool/lib``), keyed by a fingerprint of the
source, the flags and the compiler, so an upgrade rebuilds it. Linux with glibc only.

    python -m gpupool.interposer.build [OUT_DIR]     # build (if needed) and print the path
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LIB_NAME = "libgpushare.so"
SOURCES = ("gpushare.c", "gs_resolve.c", "gs_account.c", "gs_map.c")
HEADERS = ("cuda_abi.h", "gpushare.h", "gs_hooks.h")
CFLAGS = ("-O2", "-std=gnu11", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra")
LIBS = ("-ldl", "-lpthread")
COMPILE_TIMEOUT_S = 120
BUILD_ENV = "GPUPOOL_INTERPOSER_BUILD"
_FINGERPRINT_SUFFIX = ".fingerprint"


class BuildError(RuntimeError):
    """The interposer cannot be built here; the message says why and what to do."""


def source_dir() -> Path:
    """Where the shipped C source lies (this package's directory)."""
    return Path(__file__).resolve().parent


def default_dir() -> Path:
    """``$GPUPOOL_HOME/lib``, or ``~/.gpupool/lib``."""
    home = os.environ.get("GPUPOOL_HOME") or Path.home() / ".gpupool"
    return Path(home).expanduser() / "lib"


def find_compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` (may hold arguments) if set, else the first of cc, gcc,
    clang on PATH; None if there is none."""
    given = os.environ.get("CC", "").strip()
    if given:
        argv = shlex.split(given)
        found = shutil.which(argv[0])
        return [found, *argv[1:]] if found else None
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def build(
    out_dir: Path | str | None = None, *, compiler: list[str] | None = None, force: bool = False
) -> Path:
    """Compile ``libgpushare.so`` into ``out_dir`` (default :func:`default_dir`) and return its
    path; reuse the library already there if it was built from the same source, flags and
    compiler (unless ``force``). The library is replaced atomically, so processes that have it
    loaded are not disturbed. Raises :class:`BuildError` naming the problem: not Linux, no C
    compiler, missing source, an unwritable directory, or the compiler's own error."""
    if not sys.platform.startswith("linux"):
        raise BuildError(f"the GPU-sharing interposer needs Linux (this is {sys.platform})")
    cc = compiler or find_compiler()
    if not cc:
        raise BuildError(
            "no C compiler found (looked for $CC, cc, gcc, clang on PATH): install one "
            "(e.g. apt-get install gcc) or set CC, to build the GPU-sharing interposer"
        )
    src = source_dir()
    missing = [n for n in (*SOURCES, *HEADERS) if not (src / n).is_file()]
    if missing:
        raise BuildError(
            f"interposer source missing from {src}: {', '.join(missing)}; reinstall gpupool"
        )
    target_dir = Path(out_dir) if out_dir is not None else default_dir()
    target = target_dir / LIB_NAME
    stamp = target_dir / (LIB_NAME + _FINGERPRINT_SUFFIX)
    fingerprint = _fingerprint(src, cc)
    if not force and target.is_file() and _read(stamp) == fingerprint:
        return target
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{LIB_NAME}.", dir=target_dir)
        os.close(fd)
    except OSError as exc:
        raise BuildError(
            f"cannot write the interposer to {target_dir}: {exc}; set GPUPOOL_HOME to a "
            "writable directory"
        ) from exc
    tmp = Path(tmp_name)
    argv = [*cc, *CFLAGS, "-o", str(tmp), *(str(src / s) for s in SOURCES), *LIBS]
    try:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"cannot run the C compiler {cc[0]}: {exc}") from exc
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()[-2000:]
            raise BuildError(
                f"the C compiler {cc[0]} failed (exit {done.returncode}) building the "
                f"interposer from {src}:\n{output}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        stamp.write_text(fingerprint + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def installed() -> Path | None:
    """The library built by the package's install (``gpupool/interposer/lib``), if it was
    built there from the source this package ships; else None. ``GPUPOOL_INTERPOSER_BUILD=
    always`` ignores it (e.g. when the install was built for another machine's libc)."""
    if os.environ.get(BUILD_ENV, "").strip().lower() == "always":
        return None
    lib_dir = source_dir() / "lib"
    target = lib_dir / LIB_NAME
    stamp = _read(lib_dir / (LIB_NAME + _FINGERPRINT_SUFFIX))
    if not target.is_file() or not stamp:
        return None
    return target if stamp.split(":", 1)[0] == _source_digest(source_dir()) else None


def available(out_dir: Path | str | None = None) -> tuple[bool, str]:
    """Whether the interposer can be used on this machine: ``(True, path of the library)``
    — the one the install built, else one built now (or before) in ``out_dir`` — or
    ``(False, why)``. Never raises for a build problem: ``gpupool up`` reports the reason and
    falls back to the next mechanism."""
    found = installed()
    if found is not None:
        return True, str(found)
    try:
        return True, str(build(out_dir))
    except BuildError as exc:
        return False, str(exc)


def _source_digest(src: Path) -> str:
    digest = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        try:
            digest.update(name.encode() + b"\0" + (src / name).read_bytes() + b"\0")
        except OSError:
            return ""
    digest.update(" ".join([*CFLAGS, *LIBS]).encode())
    return digest.hexdigest()


def _fingerprint(src: Path, cc: list[str]) -> str:
    """``<source and flags digest>:<compiler digest>``: the first part alone says whether a
    library matches the shipped source; the whole, whether it must be rebuilt here."""
    digest = hashlib.sha256(" ".join(cc).encode())
    with open(cc[0], "rb") as f:  # a changed compiler binary rebuilds too
        digest.update(hashlib.sha256(f.read()).digest())
    return f"{_source_digest(src)}:{digest.hexdigest()}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    try:
        print(build(sys.argv[1] if len(sys.argv) > 1 else None))
    except BuildError as error:
        sys.exit(f"gpupool: {error}")
