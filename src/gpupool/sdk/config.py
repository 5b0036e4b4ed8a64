"""Where the gpupool server is and which token to present.

Rules, first match wins, separately for the URL and the token:

1. the explicit ``url`` / ``token`` arguments (the CLI's ``--url`` / ``--token``);
2. the environment: ``GPUPOOL_URL`` and ``GPUPOOL_TOKEN``;
3. the data dir (``$GPUPOOL_HOME``, default ``~/.gpupool``) that ``gpupool up`` writes:
   ``server.json`` (``{"url": ...}``) and ``admin.token``.

The admin token from the data dir is only presented to the server that the same data dir
names: pointing ``GPUPOOL_URL`` at another machine never leaks the local admin token.

The CA file that an https server's certificate is checked against (for a self-signed or
private certificate) is the ``ca_file`` argument, else ``GPUPOOL_CA_FILE``, else none (the
usual public CAs); ``Client(verify=...)`` overrides it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from gpupool.sdk.errors import ConfigError

CA_FILE_ENV = "GPUPOOL_CA_FILE"
NOTHING_CONFIGURED = (
    "no gpupool server configured: set GPUPOOL_URL and GPUPOOL_TOKEN, "
    "or run `gpupool up` on this machine"
)


@dataclass(frozen=True)
class ServerConfig:
    """A server address (no trailing slash), the bearer token, where the URL came from
    (``"--url"``, ``"GPUPOOL_URL"`` or the path of ``server.json``) for error messages, and
    the CA file to check an https server's certificate against (empty: the public CAs)."""

    url: str
    token: str
    source: str = "--url"
    ca_file: str = ""

    def __repr__(self) -> str:  # never print a secret by accident
        extra = f", ca_file={self.ca_file!r}" if self.ca_file else ""
        return f"ServerConfig(url={self.url!r}, token='***', source={self.source!r}{extra})"


def data_dir() -> Path:
    """The local data dir: ``$GPUPOOL_HOME`` or ``~/.gpupool`` (it may not exist)."""
    return Path(os.environ.get("GPUPOOL_HOME") or Path.home() / ".gpupool").expanduser()


def discover(
    url: str | None = None, token: str | None = None, ca_file: str | None = None
) -> ServerConfig:
    """The server to talk to, by the rules of this module.

    Raises ConfigError with a one-line message naming what is missing or malformed (a URL
    without http:// or https://, an unreadable ``server.json``, no token for the URL).
    """
    home = data_dir()
    source = "--url"
    if not url:
        url, source = os.environ.get("GPUPOOL_URL") or None, "GPUPOOL_URL"
    token = token or os.environ.get("GPUPOOL_TOKEN") or None
    # The data dir is read only when something is still missing.
    server_file = str(home / "server.json")
    local_url = _local_url(home) if not (url and token) else None
    if not url and local_url is not None:
        url, source = local_url, server_file
    if not url:
        raise ConfigError(NOTHING_CONFIGURED)
    url = _normalise(url, source)
    if not token and local_url is not None and _normalise(local_url, server_file) == url:
        token = _local_token(home)
    if not token:
        raise ConfigError(
            f"no token for the gpupool server at {url}: set GPUPOOL_TOKEN or pass --token "
            "(an admin creates one with `gpupool admin token create USER`)"
        )
    ca_file = ca_file or os.environ.get(CA_FILE_ENV) or ""
    return ServerConfig(url=url, token=token, source=source, ca_file=ca_file)


def _normalise(url: str, source: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{source}: the server URL must start with http:// or https://, got {url!r}"
        )
    return url


def _local_url(home: Path) -> str | None:
    """The URL in ``home/server.json``; None when the file does not exist."""
    path = home / "server.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"{path}: not valid JSON ({exc}); restart `gpupool up` to rewrite it"
        ) from None
    value = data.get("url") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f'{path}: no "url" in it; restart `gpupool up` to rewrite it')
    return value


def _local_token(home: Path) -> str | None:
    path = home / "admin.token"
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the admin token: {exc.strerror or exc}; set GPUPOOL_TOKEN instead"
        ) from None
