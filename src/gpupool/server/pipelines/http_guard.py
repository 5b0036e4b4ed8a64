"""Where a pipeline's ``http`` step may connect: not back into the server's own machine.

A step runs in the server process, so without this guard any user could make the server call
services that listen on its loopback interface, the cloud metadata service (169.254.169.254)
or the gpupool API itself. :meth:`HttpGuard.check` refuses a URL when its host is, or resolves
to, any address that is

- loopback (127.0.0.0/8, ::1);
- link-local (169.254.0.0/16, fe80::/10);
- unspecified or "this network" (0.0.0.0/8, ::);
- the server's own listening address (``Settings.host``; when the server listens on every
  address, 0.0.0.0 or ::, any address of this machine), whatever the port;

IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are judged as the IPv4 address they carry.
An admin may allow a host with GPUPOOL_HTTP_ALLOW_HOSTS (comma-separated): an entry matches
the URL's host as written (a name or an address) or one resolved address.

What is covered: the host is resolved once, every address it resolves to is checked, and the
request is then sent to those checked addresses only (:class:`Target`: the URL keeps its name
for the Host header, TLS SNI and the certificate check), so a DNS answer that changes between
the check and the connection (DNS rebinding) is never followed. The step does not follow
redirects (a 3xx is its answer) and ignores proxy environment variables, so neither can carry
the request to an address that was not checked.

What is not covered: other machines, private networks included (10/8, 172.16/12,
192.168/16, fc00::/7), are reachable: this guards the server's machine, not the network; a
remote host that forwards requests (an open proxy) can still forward them anywhere, including
back to this machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from gpupool.server.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
ALLOW_ENV = "GPUPOOL_HTTP_ALLOW_HOSTS"
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


class RefusedUrl(Exception):
    """The URL may not be called; the message names the host, the address and why, and
    says how an admin may allow it."""


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to ``addresses`` (in order), never to a fresh DNS answer."""

    url: httpx.URL
    addresses: tuple[str, ...]

    def url_for(self, address: str) -> httpx.URL:
        """The URL with its host replaced by ``address`` (the port and path kept)."""
        return self.url.copy_with(host=address, port=self.url.port)

    def headers(self, given: dict[str, str]) -> dict[str, str]:
        """``given`` plus a Host header naming the original host (unless one is given)."""
        if any(name.lower() == "host" for name in given):
            return dict(given)
        host = f"[{self.url.host}]" if ":" in self.url.host else self.url.host
        netloc = host if self.url.port is None else f"{host}:{self.url.port}"
        return {"Host": netloc, **given}

    @property
    def extensions(self) -> dict[str, str]:
        """The TLS server name (SNI and certificate check) stays the URL's host."""
        return {"sni_hostname": self.url.host} if self.url.scheme == "https" else {}


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def is_local_address(address: IPAddress) -> bool:
    """True when ``address`` belongs to this machine (a socket can be bound to it)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class HttpGuard:
    """The rules of this module for one server: its listening host and the admin's allow list.

    The default (no allow list, a server on 127.0.0.1) refuses everything this module names;
    ``resolver`` and ``is_local`` are for tests.
    """

    allow_hosts: frozenset[str] = frozenset()
    server_host: str = "127.0.0.1"
    resolver: Resolver = resolve
    is_local: Callable[[IPAddress], bool] = is_local_address
    _own: frozenset[IPAddress] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_hosts", frozenset(_key(h) for h in self.allow_hosts))
        object.__setattr__(self, "_own", frozenset(self._addresses_of(self.server_host)))

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpGuard:
        """The guard of a server run with ``settings`` (host, http_allow_hosts)."""
        return cls(frozenset(allow_list(settings.http_allow_hosts)), server_host=settings.host)

    def check(self, url: str) -> Target:
        """The checked target of ``url``; RefusedUrl when it may not be called (see the
        module's rules), cannot be parsed, is not http(s) or its host does not resolve."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise RefusedUrl(f"{url!r} is not a valid URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise RefusedUrl(f"{url!r} is not an http:// or https:// URL with a host")
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = self.resolver(host, port)
        except OSError as exc:
            raise RefusedUrl(f"cannot resolve the host {host}: {exc}") from None
        if not addresses:
            raise RefusedUrl(f"the host {host} resolves to no address")
        for text in addresses:
            why = self._refusal(host, text)
            if why:
                said = f"{host} is" if _key(host) == _key(text) else f"{host} resolves to {text},"
                raise RefusedUrl(f"{said} {why}; an admin may allow it with {ALLOW_ENV}")
        return Target(parsed, tuple(addresses))

    def _refusal(self, host: str, text: str) -> str:
        """Why the address ``text`` of ``host`` is refused; empty when it is not."""
        if _key(host) in self.allow_hosts or _key(text) in self.allow_hosts:
            return ""
        address = _plain(ipaddress.ip_address(text.split("%", 1)[0]))
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_unspecified or address in _THIS_NETWORK:
            return "an unspecified address"
        if address in self._own or (self._listens_everywhere and self.is_local(address)):
            return "an address of this gpupool server"
        return ""

    @property
    def _listens_everywhere(self) -> bool:
        try:
            return ipaddress.ip_address(self.server_host.strip("[]")).is_unspecified
        except ValueError:
            return False

    def _addresses_of(self, host: str) -> set[IPAddress]:
        try:
            return {_plain(ipaddress.ip_address(host.strip("[]")))}
        except ValueError:
            pass
        try:
            return {_plain(ipaddress.ip_address(a.split("%", 1)[0]))
                    for a in self.resolver(host, 0)}
        except OSError:  # a server host that does not resolve cannot be listened on anyway
            return set()


def allow_list(text: str) -> list[str]:
    """The hosts of a GPUPOOL_HTTP_ALLOW_HOSTS value (comma-separated, blanks ignored)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _key(host: str) -> str:
    """A host as the allow list compares it: lower case, IPv6 without brackets, an address
    in its canonical form."""
    host = host.strip().strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
