"""How the clients check an https server's certificate: the ``verify=`` argument, else the
configured CA file (``GPUPOOL_CA_FILE``), else the public CAs that httpx trusts."""

from __future__ import annotations

import os
import ssl

from gpupool.sdk.config import CA_FILE_ENV, ServerConfig
from gpupool.sdk.errors import ConfigError

Verify = bool | str | os.PathLike[str] | None
"""True: the public CAs; False: no check at all (tests only: anyone on the path can read the
token); a path: a PEM file of the CA(s) to trust; None: ``config.ca_file`` if set, else True."""


def verify_setting(verify: Verify, config: ServerConfig) -> ssl.SSLContext | bool:
    """What to pass as httpx's ``verify``. A CA file is read now: ConfigError names it and
    says what is wrong (missing, unreadable, not PEM certificates)."""
    if isinstance(verify, bool):
        return verify
    if verify is None:
        if not config.ca_file:
            return True
        return ca_context(config.ca_file, CA_FILE_ENV)
    return ca_context(os.fspath(verify), "verify=")


def ca_context(path: str, source: str) -> ssl.SSLContext:
    """A client TLS context that trusts the CA certificates in the PEM file ``path``."""
    expanded = os.path.expanduser(path)
    try:
        return ssl.create_default_context(cafile=expanded)
    except FileNotFoundError:
        problem = "no such file"
    except PermissionError:
        problem = "permission denied"
    except IsADirectoryError:
        problem = "a directory, not a file"
    except (ssl.SSLError, OSError, ValueError) as exc:
        problem = f"not a PEM file of CA certificates ({getattr(exc, 'reason', None) or exc})"
    raise ConfigError(
        f"{source}: cannot use {path} as the CA file: {problem}; name the PEM file of the CA "
        "that signed the server's certificate (for a self-signed one: the certificate itself)"
    )
