"""What every command that talks to a server shares: the --url/--token/--json options, the
client, and one-line errors with exit codes (2: a wrong request or usage, 3: no server
answer or a server failure, 130: interrupted).

Imports neither pydantic nor the SDK's models: ``gpupool ps`` prints rows without them
(``connect_raw``); ``connect`` imports the full client when a command asks for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeGuard, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from gpupool.sdk.errors import ApiError, ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

    from gpupool.sdk.client import Client
    from gpupool.sdk.raw import RawClient

T = TypeVar("T")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
if not out.is_terminal and "COLUMNS" not in os.environ:
    out.width = 200  # piped (`gpupool ps | grep ...`): do not cut tables at 80 columns

Url = Annotated[
    str | None,
    typer.Option(
        "--url", metavar="URL", help="Server URL (default: $GPUPOOL_URL, else the local server)."
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        help="API token (default: $GPUPOOL_TOKEN, else the local admin's).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def limit_option(default: int, what: str) -> Any:
    """A ``--limit/-n N`` option (0: every row) for a listing of ``what``."""
    return typer.Option("--limit", "-n", min=0, metavar="N",
                        help=f"Show at most N {what} (0: every one). Default {default}.")


def fetch_limit(limit: int) -> int | None:
    """What to ask the SDK for to show ``limit`` rows (0: all): one row more tells whether
    more exist without counting them all."""
    return None if limit == 0 else limit + 1


def cut(rows: list[T], limit: int) -> tuple[list[T], bool]:
    """The first ``limit`` of ``rows`` (fetched with ``fetch_limit``), and whether more
    exist."""
    more = limit != 0 and len(rows) > limit
    return (rows[:limit] if more else rows), more


def say_more(limit: int, what: str) -> None:
    """Tell (on stderr, after the listing) that more than the ``limit`` shown exist."""
    err.print(f"showing the first {limit} {what}: more exist (--limit N shows more, "
              "--limit 0 every one)", style="yellow")


EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a one-line error and return the exit to raise (code 2 unless told)."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=code)


def api_fail(exc: ApiError) -> typer.Exit:
    """The exit for a failed request: 3 when no answer came or the server broke, else 2."""
    message = exc.message
    if exc.status == 401:
        message += " (set GPUPOOL_TOKEN or pass --token)"
    code = EXIT_UNREACHABLE if exc.status == 0 or exc.status >= 500 else EXIT_USAGE
    return fail(message, code)


def validation_line(exc: ValidationError, where: str = "") -> str:
    """pydantic's errors as one line: ``where: field 'gpuz': extra inputs are not permitted``
    (several problems joined by ``; ``)."""
    problems = []
    for error in exc.errors():
        msg = str(error["msg"])
        msg = msg.removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
        loc = ".".join(str(p) for p in error["loc"])
        problems.append(f"field {loc!r}: {msg}" if loc else msg)
    prefix = f"{where}: " if where else ""
    return prefix + "; ".join(problems)


@contextmanager
def handled(where: str = "") -> Iterator[None]:
    """Turn the SDK's errors and Ctrl-C into a one-line message and an exit code."""
    try:
        yield
    except ApiError as exc:
        raise api_fail(exc) from None
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        if not _is_validation_error(exc):
            raise
        raise fail(validation_line(exc, where)) from None
    except KeyboardInterrupt:
        raise typer.Exit(code=EXIT_INTERRUPTED) from None


def _is_validation_error(exc: ValueError) -> TypeGuard[ValidationError]:
    # Only a process that imported pydantic can have raised its ValidationError.
    core = sys.modules.get("pydantic_core")
    return core is not None and isinstance(exc, core.ValidationError)


def connect(url: str | None, token: str | None) -> Client:
    """A client for the server named by the options or found by ``discover()``; exit 2 with
    the reason when none is configured."""
    from gpupool.sdk.client import Client

    try:
        return Client(url, token)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def connect_raw(url: str | None, token: str | None) -> RawClient:
    """As ``connect``, a client whose listings are the server's JSON objects (no models)."""
    from gpupool.sdk.raw import RawClient

    try:
        return RawClient(url, token)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def print_json(data: BaseModel | Sequence[BaseModel]) -> None:
    """A model or a list of models as indented JSON on stdout."""
    from pydantic import BaseModel

    payload: Any
    if isinstance(data, BaseModel):
        payload = data.model_dump(mode="json")
    else:
        payload = [item.model_dump(mode="json") for item in data]
    typer.echo(json.dumps(payload, indent=2))
