"""Server settings: command-line options over environment variables over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8470


def default_home() -> Path:
    return Path(os.environ.get("GPUPOOL_HOME") or Path.home() / ".gpupool")


@dataclass(frozen=True)
class Settings:
    """Where state lives and how the server runs.

    ``home`` holds the SQLite database (unless ``database_url`` points elsewhere), job logs
    and run directories, ``server.json`` (how clients find the server) and ``admin.token``.
    """

    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    database_url: str = ""
    fake_gpus: str = ""
    policy: str = "gpupool"
    tick_seconds: float = 0.5
    node_name: str = ""
    ray: str = ""
    """Empty: this machine only. ``host:port``: the Ray cluster to pool; ``local``: start a
    single-node Ray head on 127.0.0.1."""
    sharing: str = "auto"
    """How GPU shares are enforced (GPUPOOL_SHARING): auto (MIG, else MPS, else the
    interposer), or one of mig, mps, interposer, none to force it (docs/design/gpu-sharing.md)."""
    mps_control: str = ""
    """The ``nvidia-cuda-mps-control`` to use (GPUPOOL_MPS_CONTROL); empty: the one on PATH."""

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from GPUPOOL_* variables; explicit non-None ``overrides`` win."""
        values: dict[str, object] = {
            "home": default_home(),
            "database_url": os.environ.get("GPUPOOL_DATABASE_URL", ""),
            "fake_gpus": os.environ.get("GPUPOOL_FAKE_GPUS", ""),
            "policy": os.environ.get("GPUPOOL_POLICY", "gpupool"),
            "ray": os.environ.get("GPUPOOL_RAY", ""),
            "sharing": os.environ.get("GPUPOOL_SHARING", "auto"),
            "mps_control": os.environ.get("GPUPOOL_MPS_CONTROL", ""),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["home"] = Path(str(values["home"])).expanduser()
        return cls(**values)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'gpupool.db'}"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def token_file(self) -> Path:
        return self.home / "admin.token"

    @property
    def server_file(self) -> Path:
        return self.home / "server.json"
