"""A Jupyter server extension gpupool loads into every notebook's JupyterLab: the page
JupyterLab sends to the browser no longer carries the notebook's secret.

JupyterLab writes its server's token into the page (``page_config_data["token"]``) for its
scripts to send back. Under gpupool the gateway adds the secret to every request it
forwards, so the browser never needs it, and a secret in the page would be readable by any
script on the gateway's origin and would open Jupyter's port without the gateway. Loaded
with ``--ServerApp.jpserver_extensions`` (see ``server/notebook_launch.py``); Jupyter-only
(imports nothing of gpupool).
"""

from __future__ import annotations

from typing import Any

NAME = "gpupool.executors.jupyter_ext"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": NAME}]


def hide_token(_handler: Any, page_config: dict[str, Any]) -> dict[str, Any]:
    """JupyterLab's page configuration without the server's token."""
    return {**page_config, "token": ""}


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.web_app.settings["page_config_hook"] = hide_token
