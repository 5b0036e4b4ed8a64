"""How a notebook's JupyterLab is started: its command line, its environment, and its own
directory that outlives every attempt.

Contract:

- Jupyter listens on ``host:port`` of its node (never all interfaces) under the base URL
  ``/nb/<id>/``, the path the gateway forwards unchanged;
- it requires ``secret`` (``JUPYTER_TOKEN``, passed in the environment, never on the command
  line, which other accounts can read in ``/proc``) on every request: only the gateway,
  which derives it from its key, has it, so another workload reaching the port directly
  gets nothing;
- the page sent to the browser does not carry the secret (``executors/jupyter_ext.py``);
- every call JupyterLab would make to the internet (news, update checks, the extension
  manager's PyPI search) is off;
- the notebook's files, Jupyter's settings and its kernels' IPython profile live in the
  notebook's own directory (``HOME`` there too), kept across suspend and resume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpupool.executors import jupyter_ext
from gpupool.executors.accounts import Account
from gpupool.executors.launch_files import make_passable

SECRET_ENV = "JUPYTER_TOKEN"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a notebook's server listens on its node; for a service's replica also the Unix
    socket of its front (the only way in: its port is in the sandbox's own network)."""

    host: str
    port: int
    uds: str = ""

    def to_json(self) -> dict[str, object]:
        if self.uds:
            return {"host": self.host, "port": self.port, "uds": self.uds}
        return {"host": self.host, "port": self.port}


def base_url(job_id: int) -> str:
    """The path prefix of notebook ``job_id`` on the gateway and on its Jupyter server."""
    return f"/nb/{job_id}/"


def jupyter_command(python: str, job_id: int, endpoint: Endpoint, root: str) -> list[str]:
    """The argv that starts JupyterLab for notebook ``job_id`` (see the module)."""
    return [
        python, "-m", "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={endpoint.host}",
        f"--ServerApp.port={endpoint.port}",
        "--ServerApp.port_retries=0",  # another port would be one the gateway does not know
        f"--ServerApp.base_url={base_url(job_id)}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.password=",
        # the gateway checks the browser's Origin itself and rewrites it for Jupyter
        "--ServerApp.allow_remote_access=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabServerApp.open_browser=False",
        # the page JupyterLab sends the browser leaves the secret out (the gateway adds it)
        f"--ServerApp.jpserver_extensions={jupyter_ext.NAME}=True",
        # a server that is not root, or an operator's GPUPOOL_ADMIN_UNIX_USER=root, runs
        # workloads as itself; Jupyter refuses root without this
        "--allow-root",
    ]


def jupyter_env(root: str, secret: str) -> dict[str, str]:
    """The variables Jupyter starts with (added to the workload's, after the user's)."""
    dot = os.path.join(root, ".jupyter")
    return {
        SECRET_ENV: secret,
        "HOME": root,
        "JUPYTER_CONFIG_DIR": os.path.join(dot, "config"),
        "JUPYTER_DATA_DIR": os.path.join(dot, "data"),
        "JUPYTER_RUNTIME_DIR": os.path.join(dot, "runtime"),
        "IPYTHONDIR": os.path.join(dot, "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "SHELL": "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh",
    }


def make_env_dir(path: Path, account: Account | None) -> str:
    """Create the notebook's own directory (0700, owned by ``account`` when given; its
    parents passable, 0711) if missing, and return it. An existing one is kept as it is:
    its files are the notebook's."""
    make_passable(str(path.parent))
    if not path.is_dir():
        path.mkdir(mode=0o700)
        if account is not None:
            os.chown(path, account.uid, account.gid)
    if path.is_symlink():
        raise OSError(f"{path} is a link")
    return str(path)
