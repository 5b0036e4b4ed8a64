"""The environment a workload's process starts with: an allowlist, never the server's.

A workload gets ``PATH`` (the executor's job PATH, whose first directory holds a ``python``
its account can run), ``HOME``, ``USER``/``LOGNAME``, ``SHELL``, the locale and terminal
variables the server happens to have (``LANG``, ``LC_*``, ``TZ``, ``TERM``), then its spec's
variables and gpupool's own (which win). Tokens, the database URL, keys, ``GPUPOOL_HOME``
and everything else of the server's environment stay out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gpupool.executors.accounts import Account

PASSED_THROUGH = ("LANG", "LANGUAGE", "TZ", "TERM")
PASSED_PREFIXES = ("LC_",)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def environment(
    account: Account,
    path: str,
    spec_env: Mapping[str, str],
    server_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a workload running as ``account`` with PATH ``path`` and
    the variables ``spec_env`` (the user's and gpupool's, already merged). ``server_env``
    (default: this process's) only lends the locale and terminal variables."""
    source = os.environ if server_env is None else server_env
    env = {k: v for k, v in source.items()
           if k in PASSED_THROUGH or k.startswith(PASSED_PREFIXES)}
    home = account.home if account.home and os.path.isdir(account.home) else "/"
    env.update(PATH=path, HOME=home, USER=account.name, LOGNAME=account.name, SHELL="/bin/sh")
    env.update(spec_env)
    return env
