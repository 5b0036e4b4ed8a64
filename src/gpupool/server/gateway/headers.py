"""Which headers cross the gateway, in each direction, and origin arithmetic.

Upstream (to Jupyter) a request carries the client's end-to-end headers minus everything
that identifies the caller to gpupool: no ``Authorization`` (replaced by the notebook's
``token <secret>``), no gpupool session cookies (other cookies, e.g. Jupyter's ``_xsrf``,
pass), no client-supplied forwarding headers (the gateway writes its own). ``Host``,
``Origin`` and ``Referer`` are rewritten to the upstream's own origin, because Jupyter
refuses requests whose Origin differs from its Host. Downstream a response loses its
hop-by-hop headers and any ``Set-Cookie`` for a gpupool cookie (the upstream runs its
owner's code, so it must not plant or overwrite sessions); an absolute ``Location``
pointing at the upstream becomes a path.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from gpupool.server.gateway.directory import Target

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
REWRITTEN = frozenset({
    "host", "authorization", "cookie", "origin", "referer",
    "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
    "x-forwarded-port", "x-real-ip",
})
GPUPOOL_COOKIE_PREFIX = "gpupool_"
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, lower-cased, default port left out (as browsers
    send ``Origin``); None when ``url`` has no http(s) scheme or host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def upstream_authority(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def strip_gpupool_cookies(cookie_header: str) -> str:
    """The ``Cookie`` header without gpupool's own cookies; other cookies kept verbatim."""
    kept = [c.strip() for c in cookie_header.split(";")
            if c.strip() and not c.strip().startswith(GPUPOOL_COOKIE_PREFIX)]
    return "; ".join(kept)


def _rewrite_referer(referer: str, own_origins: set[str], upstream_origin: str) -> str | None:
    origin = origin_of(referer)
    if origin is None or origin not in own_origins:
        return None
    parts = urlsplit(referer)
    query = f"?{parts.query}" if parts.query else ""
    return f"{upstream_origin}{parts.path}{query}"


def upstream_headers(client: Iterable[tuple[str, str]], target: Target, *,
                     client_ip: str, proto: str, own_origins: set[str],
                     websocket: bool = False) -> list[tuple[str, str]]:
    """The headers to send upstream for a request that arrived with ``client`` headers.

    ``own_origins`` are the origins the gateway answers as (the Referer is rewritten only
    when it is one of them). For a WebSocket handshake the ``Sec-WebSocket-*`` headers and
    ``User-Agent`` are left out (the WebSocket client library writes its own) and so is
    ``Host``; ``Origin`` is still set to the upstream's origin."""
    client = list(client)
    drop = HOP_BY_HOP | REWRITTEN | _connection_tokens(client)
    authority = upstream_authority(target)
    upstream_origin = f"http://{authority}"
    out: list[tuple[str, str]] = []
    cookies: list[str] = []
    origin_seen = False
    referer: str | None = None
    forwarded_host = ""
    for name, value in client:
        low = name.lower()
        if low == "cookie":
            cookies.append(value)
        elif low == "origin":
            origin_seen = True
        elif low == "referer":
            referer = value
        elif low == "host":
            forwarded_host = value
        if low in drop:
            continue
        if websocket and (low.startswith("sec-websocket-") or low == "user-agent"):
            continue
        out.append((name, value))
    if not websocket:
        out.append(("Host", authority))
    out.append(("Authorization", f"token {target.secret}"))
    kept = strip_gpupool_cookies("; ".join(cookies))
    if kept:
        out.append(("Cookie", kept))
    if origin_seen or websocket:
        out.append(("Origin", upstream_origin))
    if referer is not None:
        rewritten = _rewrite_referer(referer, own_origins, upstream_origin)
        if rewritten is not None:
            out.append(("Referer", rewritten))
    out.append(("X-Forwarded-For", client_ip))
    out.append(("X-Forwarded-Proto", proto))
    if forwarded_host:
        out.append(("X-Forwarded-Host", forwarded_host))
    return out


def downstream_headers(upstream: Iterable[tuple[bytes, bytes]], target: Target,
                       dropped_cookies: tuple[str, ...] = ()) -> list[tuple[bytes, bytes]]:
    """Response headers for the client: hop-by-hop ones, gpupool ``Set-Cookie``s and those
    of cookies named with a prefix of ``dropped_cookies`` dropped,
    repeated ones (Set-Cookie) kept in order, a ``Location`` on the upstream's own origin
    turned into a path."""
    raw = list(upstream)
    decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    drop = HOP_BY_HOP | _connection_tokens(decoded)
    upstream_origin = f"http://{upstream_authority(target)}".lower()
    out: list[tuple[bytes, bytes]] = []
    for (name, value), (low, text) in zip(raw, decoded, strict=True):
        low = low.lower()
        if low in drop:
            continue
        if low == "set-cookie" and text.lstrip().startswith(GPUPOOL_COOKIE_PREFIX):
            continue  # the upstream runs its owner's code: it may not touch gpupool's cookies
        if low == "set-cookie" and text.lstrip().startswith(dropped_cookies):
            continue  # the mount's (see ``routes.Mount.dropped_cookies``)
        if low == "location" and text.lower().startswith(upstream_origin):
            rest = text[len(upstream_origin):]
            if rest == "" or rest.startswith(("/", "?")):
                value = (rest or "/").encode("latin-1")
        out.append((name, value))
    return out
