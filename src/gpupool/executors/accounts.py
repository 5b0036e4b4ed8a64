"""Unix accounts that workloads run as: lookup, creation for gpupool users, removal, and
whether an account may enter a directory.

A gpupool user maps to one Unix account when the server (or a node agent) runs as root: an
existing account an admin names, or one created here, named ``gp-<name>``, with no login
shell, its own group, and a home of mode 0700. Created accounts carry the marker
``gpupool user <gpupool name>`` in their GECOS field, so that another server on the same machine
(or a node agent) finds and reuses them by name and never takes over an account that is not
gpupool's. Standard library plus the shadow tools (``useradd``/``userdel``).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import stat
import subprocess
from dataclasses import dataclass

MARKER = "gpupool user "
PREFIX = "gp-"
PREFIX_ENV = "GPUPOOL_ACCOUNT_PREFIX"
"""Another prefix for the accounts this server creates (two servers on one machine must not
share accounts: one deleting its user would remove the other's); default :data:`PREFIX`."""
_PREFIX_VALID = re.compile(r"^[a-z_][a-z0-9_-]{0,15}$")
MAX_NAME = 32
NOLOGIN = "/usr/sbin/nologin"
_VALID = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class AccountError(RuntimeError):
    """An account cannot be found, created or used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def of(cls, entry: pwd.struct_passwd) -> Account:
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def isolating() -> bool:
    """True iff this process can run work as other accounts (it is root)."""
    return os.geteuid() == 0


def lookup(name: str) -> Account:
    """The existing account ``name``; AccountError if there is none."""
    try:
        return Account.of(pwd.getpwnam(name))
    except KeyError:
        raise AccountError(f"no Unix account named {name!r} on this machine") from None


def current() -> Account:
    """The account this process runs as."""
    return Account.of(pwd.getpwuid(os.geteuid()))


def derived_name(gpupool_name: str, taken: frozenset[str] | set[str] = frozenset()) -> str:
    """A valid Unix name for a gpupool user: ``gp-`` + the name lowercased, characters other
    than ``a-z0-9_-`` turned into ``-``, cut to 32 characters; a numbered suffix when the
    result is in ``taken`` or belongs to an account that is not this user's gpupool account.
    The prefix is GPUPOOL_ACCOUNT_PREFIX when set (:func:`prefix`)."""
    base = prefix() + re.sub(r"[^a-z0-9_-]", "-", gpupool_name.lower())
    base = base[:MAX_NAME]
    for n in range(1, 1000):
        name = base if n == 1 else f"{base[: MAX_NAME - len(str(n)) - 1]}-{n}"
        if name in taken:
            continue
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return name
        if entry.pw_gecos == MARKER + gpupool_name:
            return name
    raise AccountError(f"no free Unix name for gpupool user {gpupool_name!r}")


def prefix() -> str:
    """The prefix of created accounts: GPUPOOL_ACCOUNT_PREFIX, else ``gp-``. AccountError
    for a prefix that cannot start a Unix name (a-z _ then a-z 0-9 _ -, 16 at most)."""
    chosen = os.environ.get(PREFIX_ENV, "") or PREFIX
    if not _PREFIX_VALID.match(chosen):
        raise AccountError(f"{PREFIX_ENV}={chosen!r}: use a-z or _ then a-z, 0-9, _ or -, "
                           "16 characters at most (e.g. gp-)")
    return chosen


def ensure(name: str, gpupool_name: str) -> tuple[Account, bool]:
    """The account ``name`` for gpupool user ``gpupool_name``: found if it exists and is this
    user's gpupool account, else created (no login shell, own group, home 0700 under
    /home). Returns (account, created). AccountError if ``name`` exists but is not gpupool's
    account for this user, is invalid, or ``useradd`` fails."""
    if not _VALID.match(name):
        raise AccountError(f"{name!r} is not a valid Unix user name (a-z0-9_-, 32 at most)")
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(name)
        if entry.pw_gecos != MARKER + gpupool_name:
            raise AccountError(
                f"the Unix account {name!r} exists and is not gpupool's account for "
                f"{gpupool_name!r}; name it explicitly (--unix-user) to use it")
        return Account.of(entry), False
    home = f"/home/{name}"
    result = subprocess.run(
        ["useradd", "--create-home", "--home-dir", home, "--shell", NOLOGIN, "--user-group",
         "--comment", MARKER + gpupool_name, name],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        with contextlib.suppress(KeyError):  # a concurrent creation of the same account
            entry = pwd.getpwnam(name)
            if entry.pw_gecos == MARKER + gpupool_name:
                return Account.of(entry), False
        raise AccountError(f"cannot create the Unix account {name!r}: "
                           f"{(result.stderr or result.stdout).strip()}")
    account = lookup(name)
    os.chmod(account.home, 0o700)
    return account, True


def remove(name: str, gpupool_name: str) -> bool:
    """Delete the account and its home iff it is gpupool's account for ``gpupool_name``
    (never anyone else's). True if it was removed; False if it did not exist or is not
    gpupool's. AccountError if ``userdel`` fails (e.g. a process of it still runs)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return False
    if entry.pw_gecos != MARKER + gpupool_name:
        return False
    result = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True,
                            check=False)
    if result.returncode not in (0, 12):  # 12: the home could not be removed
        raise AccountError(f"cannot delete the Unix account {name!r}: "
                           f"{(result.stderr or result.stdout).strip()}")
    return True


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def cannot_enter(path: str, account: Account) -> str | None:
    """None if ``account`` (its uid and primary group only: workloads get no supplementary
    groups) may enter the directory ``path`` (search permission on it and on every parent);
    else why not, naming the first directory in the way. Mode bits only (no ACLs)."""
    if account.uid == 0:
        return None
    current_path = "/"
    parts = [p for p in os.path.abspath(path).split("/") if p]
    for part in ["", *parts]:
        current_path = os.path.join(current_path, part) if part else "/"
        try:
            st = os.stat(current_path)
        except OSError as exc:
            return f"{current_path}: {exc.strerror}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{current_path} is not a directory"
        if st.st_uid == account.uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == account.gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return (f"{current_path} (mode {stat.S_IMODE(st.st_mode):04o}, owner "
                    f"{_owner(st.st_uid)}) does not let {account.name} in")
    return None


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def resolve(unix_user: str | None, gpupool_name: str = "", created: bool = False
            ) -> Account | None:
    """The account a gpupool user's work runs as on this machine: None when this process is
    not root or the user maps to no account (work runs as this process); the account named
    ``unix_user``, created when missing if gpupool ``created`` it for ``gpupool_name``.
    AccountError if it is missing and may not be created, or cannot be."""
    if unix_user is None or not isolating():
        return None
    try:
        return lookup(unix_user)
    except AccountError:
        if not created:
            raise
    return ensure(unix_user, gpupool_name)[0]
