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

from typing import TYPE_CHECKING, Any

from gpupool.sdk.config import ServerConfig, discover
from gpupool.sdk.errors import ApiError, ConfigError, NotebookNotReady

if TYPE_CHECKING:
    from gpupool.sdk.async_client import AsyncClient
    from gpupool.sdk.client import Client
    from gpupool.sdk.pipelines import Pipelines
    from gpupool.sdk.raw import RawClient


def __getattr__(name: str) -> Any:
    # Imported on first use: a CLI command that needs neither asyncio nor YAML starts faster,
    # and one that only prints rows (gpupool.sdk.raw) imports neither the models nor pydantic.
    if name == "Client":
        from gpupool.sdk.client import Client

        return Client
    if name == "RawClient":
        from gpupool.sdk.raw import RawClient

        return RawClient
    if name == "AsyncClient":
        from gpupool.sdk.async_client import AsyncClient

        return AsyncClient
    if name == "Pipelines":
        from gpupool.sdk.pipelines import Pipelines

        return Pipelines
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ApiError", "AsyncClient", "Client", "ConfigError", "NotebookNotReady", "Pipelines",
    "RawClient", "ServerConfig", "discover",
]
