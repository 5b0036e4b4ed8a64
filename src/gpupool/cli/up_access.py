"""How ``gpupool up`` may be reached: the listening host and TLS (``--host``, ``--tls-cert``,
``--tls-key``), checked before the server starts."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path

_ENV = {"--tls-cert": "GPUPOOL_TLS_CERT", "--tls-key": "GPUPOOL_TLS_KEY"}


class AccessError(Exception):
    """The host or TLS options cannot be used; the message names the option and the fix."""


def tls_files(cert: str, key: str) -> tuple[str, str]:
    """The absolute paths of the certificate and key files, or ("", "") for plain HTTP.

    Raises AccessError when only one is given, a file is missing or unreadable, or the pair
    does not load (not PEM, or a key that does not belong to the certificate)."""
    if not cert and not key:
        return "", ""
    if not (cert and key):
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        raise AccessError(
            f"{given} (or ${_ENV[given]}) needs {missing} (or ${_ENV[missing]}) too: "
            "give both to serve HTTPS, or neither for plain HTTP"
        )
    paths = []
    for option, name in (("--tls-cert", cert), ("--tls-key", key)):
        path = Path(name).expanduser().absolute()
        try:
            path.read_bytes()
        except FileNotFoundError:
            raise AccessError(f"{option} {name}: no such file") from None
        except IsADirectoryError:
            raise AccessError(f"{option} {name}: a directory, not a PEM file") from None
        except OSError as exc:
            raise AccessError(f"{option} {name}: cannot read it: {exc.strerror or exc}") from None
        paths.append(str(path))
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(paths[0], paths[1])
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise AccessError(
            f"--tls-cert {cert} with --tls-key {key}: cannot load them ({reason}); both must "
            "be PEM files, the key unencrypted and belonging to the certificate"
        ) from None
    return paths[0], paths[1]


def is_loopback(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address (127.0.0.0/8, ::1);
    False for any other address, for 0.0.0.0 / :: (every interface) and for a name that does
    not resolve."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(found) and all(
        ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in found
    )


def clear_text_warning(host: str, tls: bool) -> str | None:
    """The warning ``gpupool up`` prints when it would serve plain HTTP beyond this machine;
    None with TLS or on a loopback host."""
    if tls or is_loopback(host):
        return None
    return (
        f"warning: listening on {host} without TLS: API tokens and job data travel in clear "
        "text over the network; serve HTTPS with --tls-cert and --tls-key, or listen on "
        "127.0.0.1 only"
    )
