"""Shared by every test module: under pytest-xdist (``-n 2``), each worker's servers create
Unix accounts with a prefix of their own (``gp0-``, ``gp1-``…), so that a test deleting its
user ``ada`` never removes the account a test of another worker runs ``ada``'s jobs as; and
the CLI's width is what it is without workers."""

from __future__ import annotations

import os

import pytest

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw"):
    os.environ["GPUPOOL_ACCOUNT_PREFIX"] = f"gp{_WORKER[2:]}-"
    # xdist's workers get COLUMNS=80 and LINES=24; without them a CLI writing to a pipe lays
    # its tables out 200 wide, as in a run without workers (cli/client_opts.py)
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)

# The client's caches (e.g. gpupool run --code's digests) go to a folder of this run's own,
# never to the user's ~/.cache.
if "GPUPOOL_TESTS_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["GPUPOOL_TESTS_CACHE"] = os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(
        prefix="gp-cache-")
    atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)


LONGEST_FIRST = ("test_ray_cluster.py", "test_notebooks_e2e.py", "test_api_fuzz.py",
                 "test_console_notebooks.py", "test_server_crash.py", "test_readme.py",
                 "test_services_e2e.py", "test_console.py")
"""Files that take the longest (a minute or more each): started first, so that with two
workers (``-n 2 --dist loadfile``) none of them is what the run waits for at its end.
Within a file the order stays as written."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
