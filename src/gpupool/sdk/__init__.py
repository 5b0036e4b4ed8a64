"""gpupool's Python SDK: talk to a gpupool server from a script or notebook.

    from gpupool.sdk import Client

    with Client() as gp:                      # finds the server like the CLI does
        job = gp.submit({"command": ["python", "train.py"], "gpus": 0.5})
        for text in gp.follow_logs(job.id):
            print(text, end="")
        print(gp.wait(job.id).phase)

It speaks the wire contract (``gpupool.schemas``) only; see ``discover`` for how the server
and token are found.
"""

from gpupool.sdk.client import AsyncClient, Client
from gpupool.sdk.config import ServerConfig, discover
from gpupool.sdk.errors import ApiError, ConfigError
from gpupool.sdk.pipelines import Pipelines

__all__ = [
    "ApiError", "AsyncClient", "Client", "ConfigError", "Pipelines", "ServerConfig", "discover",
]
