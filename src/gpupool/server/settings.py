"""Server settings: command-line options over environment variables over defaults."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8470
DEFAULT_GATEWAY_PORT = 8471
QUEUE_ORDERS = ("fifo", "fairshare")
"""How each queue's pending jobs are ordered (``Settings.queue_order``)."""


def default_home() -> Path:
    return Path(os.environ.get("GPUPOOL_HOME") or Path.home() / ".gpupool")


def default_work_dir(home: Path) -> Path:
    """Where workloads' own files live when none is named (GPUPOOL_WORK_DIR): inside the data
    dir for a server that is not root (nothing is isolated then); for root, a directory
    outside it (the data dir is 0700 and may sit under /root), one per data dir."""
    if os.geteuid() != 0:
        return home / "work"
    key = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]
    return Path("/var/lib/gpupool") / f"work-{key}"


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
    work_dir: Path | None = None
    """Workloads' own files (GPUPOOL_WORK_DIR): per-attempt directories owned by the job's
    account, the interposer and the job interpreter links; None: :func:`default_work_dir`."""
    sandbox: str = "auto"
    """GPUPOOL_SANDBOX: auto (bubblewrap when it works here), bwrap (required), none."""
    images: str = "auto"
    """GPUPOOL_IMAGES: auto (run workloads' container images with podman when this machine
    can) or off."""
    image_network: str = "host"
    """GPUPOOL_IMAGE_NETWORK: the network of workloads in images, host or none."""
    artifact_limit_mib: int = 1024
    """GPUPOOL_ARTIFACT_LIMIT_MIB: the most bytes of artifacts one attempt keeps."""
    team_artifact_limit_mib: int = 10240
    """GPUPOOL_TEAM_ARTIFACT_LIMIT_MIB: the most bytes of artifacts a team keeps in all."""
    image_insecure_registries: str = ""
    """GPUPOOL_IMAGE_INSECURE_REGISTRIES: comma-separated registries (host[:port]) images
    may be pulled from over plain HTTP (a registry on the machine's own network)."""
    code_limit_mib: int = 100
    """GPUPOOL_CODE_LIMIT_MIB: the largest code archive (gpupool run --code) accepted."""
    image_pull: str = "missing"
    """GPUPOOL_IMAGE_PULL: when podman pulls a workload's image: missing, always, newer or
    never."""
    tls_cert: str = ""
    """PEM certificate to serve HTTPS with (with ``tls_key``); empty: plain HTTP."""
    tls_key: str = ""
    http_allow_hosts: str = ""
    """GPUPOOL_HTTP_ALLOW_HOSTS: comma-separated hosts that pipeline HTTP steps may call even
    though they are loopback, link-local or the server's own address (admin's choice)."""
    queue_order: str = "fairshare"
    """Which team's pending job goes first: ``fairshare`` (the team whose recent GPU use is
    lowest for its weight) or ``fifo`` (priority, then submission order)."""
    backfill: bool = True
    """Start a later job on GPUs kept for a reserved one when it ends before they are due."""
    fairshare_half_life_s: float = 7 * 86400
    """Fair share counts past GPU use with this half-life (seconds; > 0)."""
    reserve_after_s: float = 300.0
    """A pending job that waited longer than this (seconds; >= 0) gets a reservation."""
    default_run_limit_s: float = 3600.0
    """The run time assumed for a running job without a time limit when estimating when a
    reservation starts (seconds; > 0)."""
    gateway_port: int = DEFAULT_GATEWAY_PORT
    """The gateway's port (notebooks at ``/nb/<id>/``); 0: any free port (tests)."""
    gateway_url: str = ""
    """GPUPOOL_GATEWAY_URL: the gateway's address as browsers reach it (behind a proxy);
    empty: ``http://<host>:<gateway port>``."""
    notebook_idle_timeout_s: float = 1800.0
    """A notebook without its own ``idle_timeout_s`` is suspended after this long idle."""
    notebook_max_idle_timeout_s: float = 86400.0
    """The longest idle timeout a notebook may ask for (longer ones are refused)."""
    notebook_max_lifetime_s: float = 7 * 86400.0
    """A notebook running this long without a pause is suspended (its time limit, when it
    asks for none or a longer one)."""
    gpu_sample_interval_s: float = 10.0
    """Seconds between two NVML samples of GPU and job utilisation (real GPUs only)."""
    gpu_idle_after_s: float = 1800.0
    """A running workload whose GPUs show under 5 % utilisation this long is flagged idle."""
    metrics_public_aggregate: bool = False
    """``GET /metrics`` without a token answers the aggregate view (no team, queue, job or
    user named); off: a token is required, as for the full view."""

    def __post_init__(self) -> None:
        problem = queue_policy_problem(self)
        if problem is not None:
            raise ValueError(problem)
        problem = image_settings_problem(self)
        if problem is not None:
            raise ValueError(problem)
        if not 0 <= self.gateway_port <= 65535:
            raise ValueError(f"gateway port {self.gateway_port}: use 1-65535, or 0 for any")
        for name in ("gpu_sample_interval_s", "gpu_idle_after_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} {value!r}: use a finite number of seconds, more "
                                 "than 0")
        if not 0 < self.notebook_idle_timeout_s <= self.notebook_max_idle_timeout_s:
            raise ValueError("notebook idle timeout: must be > 0 and at most the maximum "
                             f"({self.notebook_max_idle_timeout_s:g} s)")

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
            "host": os.environ.get("GPUPOOL_HOST", "") or "127.0.0.1",
            "work_dir": os.environ.get("GPUPOOL_WORK_DIR") or None,
            "sandbox": os.environ.get("GPUPOOL_SANDBOX", "auto"),
            "images": os.environ.get("GPUPOOL_IMAGES", "auto"),
            "image_network": os.environ.get("GPUPOOL_IMAGE_NETWORK", "host"),
            "image_pull": os.environ.get("GPUPOOL_IMAGE_PULL", "missing"),
            "image_insecure_registries": os.environ.get("GPUPOOL_IMAGE_INSECURE_REGISTRIES", ""),
            "code_limit_mib": int(os.environ.get("GPUPOOL_CODE_LIMIT_MIB", "") or 100),
            "artifact_limit_mib": int(os.environ.get("GPUPOOL_ARTIFACT_LIMIT_MIB", "") or 1024),
            "team_artifact_limit_mib": int(
                os.environ.get("GPUPOOL_TEAM_ARTIFACT_LIMIT_MIB", "") or 10240),
            "tls_cert": os.environ.get("GPUPOOL_TLS_CERT", ""),
            "tls_key": os.environ.get("GPUPOOL_TLS_KEY", ""),
            "http_allow_hosts": os.environ.get("GPUPOOL_HTTP_ALLOW_HOSTS", ""),
            "gateway_url": os.environ.get("GPUPOOL_GATEWAY_URL", "").rstrip("/"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["home"] = Path(str(values["home"])).expanduser()
        if values.get("work_dir"):
            values["work_dir"] = Path(str(values["work_dir"])).expanduser()
        return cls(**values)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def gateway_public_url(self, port: int | None = None) -> str:
        """The gateway's URL as browsers reach it (``port``: where it listens, when the
        setting says 0)."""
        if self.gateway_url:
            return self.gateway_url
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{port if port is not None else self.gateway_port}"

    @property
    def jobs_root(self) -> Path:
        """The resolved work dir (see ``work_dir``)."""
        return self.work_dir or default_work_dir(self.home)
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


def queue_policy_problem(settings: Settings) -> str | None:
    """What is wrong with the queue-policy settings (naming the setting, what it is and what
    is allowed), or None when they can be used."""
    if settings.queue_order not in QUEUE_ORDERS:
        return (f"queue_order {settings.queue_order!r}: use one of {', '.join(QUEUE_ORDERS)}")
    if not isinstance(settings.backfill, bool):
        return f"backfill {settings.backfill!r}: use true or false"
    for name, low, above in (("fairshare_half_life_s", 0.0, True),
                             ("reserve_after_s", 0.0, False),
                             ("default_run_limit_s", 0.0, True)):
        value = getattr(settings, name)
        fine = (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value) and (value > low if above else value >= low))
        if not fine:
            bound = "more than 0" if above else "0 or more"
            return f"{name} {value!r}: use a finite number of seconds, {bound}"
    return None


def image_settings_problem(settings: Settings) -> str | None:
    """What is wrong with the container-image settings (naming the variable), or None."""
    from gpupool.executors.containers import NETWORKS, PULL_POLICIES

    checks = (("GPUPOOL_IMAGES", settings.images, ("auto", "off")),
              ("GPUPOOL_IMAGE_NETWORK", settings.image_network, NETWORKS),
              ("GPUPOOL_IMAGE_PULL", settings.image_pull, PULL_POLICIES))
    for name, value, allowed in checks:
        if value not in allowed:
            return f"{name}={value!r}: use one of {', '.join(allowed)}"
    from gpupool.schemas.registry import HOST

    for host in filter(None, (h.strip() for h in settings.image_insecure_registries.split(","))):
        if not HOST.match(host):
            return (f"GPUPOOL_IMAGE_INSECURE_REGISTRIES: {host!r} is not a registry "
                    "(host or host:port)")
    return None
