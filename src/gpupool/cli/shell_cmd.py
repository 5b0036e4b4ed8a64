"""``gpupool shell NAME``: a terminal in a notebook's environment (its sandbox, as its owner),
through the gateway and Jupyter's terminal API.

The notebook's ``url`` (``<gateway>/nb/<id>/lab``) gives its prefix on the gateway. The
command asks ``POST <prefix>api/terminals`` for a terminal (``{"name": T}``), joins it over
the WebSocket ``<prefix>terminals/websocket/T`` (``ws://``, or ``wss://`` for an https
gateway) with ``cli/terminal.py``, and deletes it (``DELETE <prefix>api/terminals/T``) on the
way out. Every request carries the caller's gpupool token (``Authorization: Bearer``); an
https gateway's certificate is checked as the API's (``GPUPOOL_CA_FILE``).

Exit codes: 0 once the remote shell ended (or, piped, its output went quiet); 1 when the
notebook is not there or not running (as ``gpupool notebook open``); 2 when the gateway
refuses; 3 when it cannot be reached or fails.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from gpupool.cli import terminal
from gpupool.cli.client_opts import (
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Token,
    Url,
    connect,
    err,
    fail,
    handled,
)

if TYPE_CHECKING:
    import httpx

    from gpupool.sdk.config import ServerConfig

DRAIN_S = 5.0
TIMEOUT_S = 30.0


def shell(
    ref: Annotated[str, typer.Argument(metavar="NAME", help="The notebook's name, or its id.")],
    resume: Annotated[bool, typer.Option(
        "--resume", help="Resume the notebook first if it is suspended.")] = False,
    drain: Annotated[float, typer.Option(
        metavar="SECONDS", min=0,
        help="Piped input only: once it has been sent, how long to wait for more output "
             "before leaving (the shell is sent Ctrl-D; its end ends the wait sooner).")
    ] = DRAIN_S,
    url: Url = None,
    token: Token = None,
) -> None:
    """An interactive terminal in a notebook's environment, through the gateway.

    Waits until the notebook answers. On a terminal, every key goes to the remote shell
    (Ctrl-C included); leave with `exit` or Ctrl-D. With stdin not a terminal, its text is
    typed into the shell, then Ctrl-D: echo 'nvidia-smi; exit' | gpupool shell NAME
    """
    from gpupool.cli.notebook_cmd import ready_view
    from gpupool.sdk.notebooks import gateway_base

    with connect(url, token) as client, handled():
        view = ready_view(client, ref, resume=resume)
        config = client.config
    try:
        base = gateway_base(view.url or "")  # ready_view: a notebook that answers, a url
    except ValueError as exc:
        raise fail(f"notebook {view.name}: {exc}", EXIT_UNREACHABLE) from None
    gateway = Gateway(base, config)
    try:
        name = gateway.open_terminal()
        try:
            _join(gateway, name, drain)
        finally:
            gateway.close_terminal(name)
    except KeyboardInterrupt:  # piped: Ctrl-C here (on a terminal it goes to the shell)
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    finally:
        gateway.close()


def _join(gateway: Gateway, name: str, drain: float) -> None:
    stdin = sys.stdin
    tty = stdin.isatty()
    with contextlib.ExitStack() as stack:
        connection = gateway.connect(name, stack)
        session = terminal.Session(connection, _writer(tty or sys.stdout.isatty())).start()
        try:
            if tty:
                terminal.interactive(session, stdin.fileno())
            else:
                terminal.piped(session, stdin.buffer, drain)
        finally:
            session.close()
    if tty:
        err.print("\nterminal closed", markup=False)


def _writer(terminal_out: bool) -> Any:
    """Writes the terminal's output to stdout as it comes; to a file or pipe, with the
    terminal's CR LF line ends as LF."""
    out = sys.stdout

    def write(text: str) -> None:
        out.write(text if terminal_out else text.replace("\r\n", "\n"))
        out.flush()

    return write


class Gateway:
    """Requests to one notebook's prefix ``base`` on the gateway, as ``config``'s token."""

    def __init__(self, base: str, config: ServerConfig) -> None:
        import httpx

        self.base = base
        self.headers = {"Authorization": f"Bearer {config.token}"}
        self.verify = _verify(config) if base.startswith("https://") else False
        self.http = httpx.Client(headers=self.headers, verify=self.verify, timeout=TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def open_terminal(self) -> str:
        """A new terminal's name; exit 2 or 3 saying why the gateway gave none."""
        answer = self._send("POST", "api/terminals", "open a terminal")
        try:
            name = answer.json()["name"]
        except (ValueError, KeyError, TypeError):
            name = None
        if not isinstance(name, str) or not name:
            raise fail(f"the gateway at {self.base} answered without a terminal name "
                       f"(HTTP {answer.status_code})", EXIT_UNREACHABLE)
        return name

    def close_terminal(self, name: str) -> None:
        """Delete the terminal (its shell may have ended, and it with it: no error)."""
        import httpx

        with contextlib.suppress(httpx.HTTPError):
            self.http.delete(self.base + f"api/terminals/{quote(name, safe='')}")

    def connect(self, name: str, stack: contextlib.ExitStack) -> Any:
        """The WebSocket of terminal ``name``, closed when ``stack`` closes (websockets >= 16
        wants its connections used as context managers); exit 2 or 3 saying why there is
        none."""
        from websockets.exceptions import InvalidHandshake
        from websockets.sync.client import connect as websocket

        from gpupool.sdk.notebooks import websocket_url

        address = websocket_url(self.base, f"terminals/websocket/{quote(name, safe='')}")
        context = None
        if address.startswith("wss://"):
            context = (self.verify if isinstance(self.verify, ssl.SSLContext)
                       else ssl.create_default_context())
        try:
            return stack.enter_context(websocket(
                address, additional_headers=self.headers, ssl=context, open_timeout=TIMEOUT_S))
        except InvalidHandshake as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            what = f"HTTP {status}" if status else str(exc)
            code = EXIT_USAGE if status is not None and status < 500 else EXIT_UNREACHABLE
            raise fail(f"the gateway refused the terminal's connection ({what}) at {address}",
                       code) from None
        except (OSError, TimeoutError) as exc:
            raise fail(f"cannot reach the notebook gateway at {address}: {exc}",
                       EXIT_UNREACHABLE) from None

    def _send(self, method: str, path: str, what: str) -> httpx.Response:
        import httpx

        from gpupool.sdk._http import error_message

        try:
            answer = self.http.request(method, self.base + path)
        except httpx.TransportError as exc:
            raise fail(f"cannot reach the notebook gateway at {self.base}: "
                       f"{str(exc) or type(exc).__name__}", EXIT_UNREACHABLE) from None
        if not answer.is_success:
            code = EXIT_UNREACHABLE if answer.status_code >= 500 else EXIT_USAGE
            problem = error_message(answer)
            if not problem.startswith("HTTP "):
                problem = f"HTTP {answer.status_code}: {problem}"
            raise fail(f"the gateway at {self.base} would not {what}: {problem}", code)
        return answer


def _verify(config: ServerConfig) -> ssl.SSLContext | bool:
    """The certificate check of the API's (the configured CA file, else the public CAs)."""
    from gpupool.sdk._tls import verify_setting

    with handled():
        return verify_setting(None, config)
