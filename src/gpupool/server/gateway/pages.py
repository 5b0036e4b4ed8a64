"""The gateway's own answers: JSON errors for programs, tiny HTML pages for people.

Every page is static text plus escaped values, is never cached, and never redirects (so a
missing credential can't start a redirect loop).
"""

from __future__ import annotations

import html

from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, JSONResponse, Response

NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
RETRY_AFTER_S = 5
REFRESH_S = 3


def wants_html(conn: HTTPConnection) -> bool:
    """A person's browser navigating: a GET whose ``Accept`` names text/html. WebSocket
    handshakes, other methods and API clients get JSON."""
    if conn.scope["type"] != "http" or conn.scope["method"] != "GET":
        return False
    return "text/html" in conn.headers.get("accept", "").lower()


def json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status,
                        headers={**NO_STORE, **(headers or {})})


def _page(status: int, title: str, body: str, head: str = "",
          headers: dict[str, str] | None = None) -> Response:
    text = (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>{head}"
        "<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;"
        "padding:0 1em;color:#222}code{background:#eee;padding:0 .3em}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(text, status_code=status, headers={**NO_STORE, **(headers or {})})


def sign_in_needed(conn: HTTPConnection, nb_id: int, detail: str) -> Response:
    """401: no valid credential. HTML for a browser, JSON otherwise."""
    if not wants_html(conn):
        return json_error(401, detail)
    body = (
        f"<p>{html.escape(detail)}</p>"
        f"<p>Open notebook {nb_id} from the gpupool console, or run "
        "<code>gpupool notebook open NAME</code>: that signs this browser in.</p>"
    )
    return _page(401, "Sign-in needed", body)


def bad_ticket(detail: str) -> Response:
    """401 page for a sign-in link that is forged, expired or already used."""
    body = (
        f"<p>{html.escape(detail)}</p>"
        "<p>Sign-in links work once and for one minute. Open the notebook again from the "
        "gpupool console, or run <code>gpupool notebook open NAME</code>.</p>"
    )
    return _page(401, "This sign-in link is no longer valid", body)


def not_ready(conn: HTTPConnection, nb_id: int, state: str, resumed: bool) -> Response:
    """503 while a notebook has no running server: a self-refreshing page for a browser,
    JSON otherwise; ``Retry-After`` either way."""
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    waiting = state != "suspended" or resumed
    if state != "suspended":
        why = f"notebook {nb_id} is {state}"
    elif resumed:
        why = f"notebook {nb_id} was suspended and is queued to start again"
    else:
        why = f"notebook {nb_id} is suspended; its owner resumes it by opening it"
    if not wants_html(conn):
        return json_error(503, why, retry)
    title = "Starting your notebook…" if waiting else "Notebook suspended"
    body = (
        "<p>Starting your notebook… kernels restart after a suspend (your files are kept, "
        "variables in memory are not).</p>" if waiting else ""
    ) + f"<p>Status: {html.escape(why)}. This page reloads every {REFRESH_S} seconds.</p>"
    head = f"<meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">"
    return _page(503, title, body, head, retry)
