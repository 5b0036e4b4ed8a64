"""Commands that are imported only when used, so that ``gpupool --help`` or ``gpupool ps``
does not pay for the simulator, numpy, matplotlib or the server.

A ``LazyGroup`` lists every command from a table of names, each with its one-line help and
the *unit* (a function) that builds it. A unit is called the first time one of its commands
is needed (to run it, to show its ``--help``, or when a tool reads ``group.commands[name]``),
and it builds the click commands of every name it serves at once. Listing the group
(``gpupool --help``, shell completion of command names) uses the table's one-line help and
builds nothing. ``group.commands`` is a mapping over every name in the table: iterating it
builds nothing, reading a value builds that command's unit.

Contract with the units: a unit returns click commands for (at least) the names the table
gives it; the table's one-line help is what ``command.get_short_help_str()`` says once it is
built (``tests/test_cli_fast.py`` checks both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperGroup

from gpupool.cli.lean import lean_options

Unit = Callable[[], Mapping[str, Any]]
"""Builds the click commands of a unit: {name: command}."""


@dataclass(frozen=True)
class Lazy:
    """One command of the table: the unit that builds it and its one-line help."""

    unit: Unit
    short_help: str


class LazyCommands(MutableMapping[str, Any]):
    """``{name: click command}`` over the table's names (in the table's order) and commands
    added eagerly (after them); a value is built on first read (see the module)."""

    def __init__(self, table: Mapping[str, Lazy], eager: Mapping[str, Any]) -> None:
        self._table = dict(table)
        self._built: dict[str, Any] = dict(eager)
        self._order = [*self._table, *(n for n in eager if n not in self._table)]

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            lazy = self._table[name]  # KeyError for an unknown name, as a dict
            for built_name, command in lazy.unit().items():
                self._built.setdefault(built_name, command)
            if name not in self._built:
                raise RuntimeError(f"the CLI unit for {name!r} did not build it")
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        if name not in self._table and name not in self._built:
            self._order.append(name)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._table and name not in self._built:
            raise KeyError(name)
        self._table.pop(name, None)
        self._built.pop(name, None)
        self._order.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._table or name in self._built

    def short_help(self, name: str, limit: int = 45) -> str:
        """The one-line help of ``name`` without building it (if it is not built yet)."""
        if name in self._built:
            return str(self._built[name].get_short_help_str(limit))
        return self._table[name].short_help

    def hidden(self, name: str) -> bool:
        return name in self._built and bool(getattr(self._built[name], "hidden", False))


class LazyGroup(TyperGroup):
    """A Typer group whose commands come from ``table`` (see the module); make one with
    ``lazy_group(table)`` and pass it as ``typer.Typer(cls=...)``."""

    table: Mapping[str, Lazy] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands(self.table, self.commands)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # Options are parsed without pydantic where Typer's coercion would change nothing
        # (cli/lean.py): the group's (--version, --install-completion: added by Typer after
        # __init__), then those of the command it runs (resolve_command).
        lean_options(self, ctx)
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            lean_options(command, ctx)
        return name, command, rest

    def _lazy(self) -> LazyCommands:
        assert isinstance(self.commands, LazyCommands)
        return self.commands

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        commands = self._lazy()
        names = [n for n in commands if not commands.hidden(n)]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, commands.short_help(n, limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        from typer._click.shell_completion import CompletionItem

        commands = self._lazy()
        found = [CompletionItem(n, help=commands.short_help(n)) for n in commands
                 if n.startswith(incomplete) and not commands.hidden(n)]
        # The options of the group itself, as click offers them (not its command names).
        return found + super(TyperGroup, self).shell_complete(ctx, incomplete)


def lazy_group(table: Mapping[str, Lazy]) -> type[LazyGroup]:
    """A LazyGroup class over ``table``."""
    return type("GpupoolGroup", (LazyGroup,), {"table": dict(table)})


def plain_help(app: typer.Typer) -> typer.Typer:
    """``app`` and every Typer added to it (recursively) format their help as plain text:
    rich markup would swallow text in brackets (``gpupool[ray]``) and show ``<bool>`` on
    flags, and plain help does not import rich at all."""
    app.rich_markup_mode = None
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)
    return app


def build(register: Callable[[typer.Typer], object]) -> dict[str, Any]:
    """The click commands that ``register`` adds to a Typer app, by name (plain help)."""
    app = typer.Typer(add_completion=False)
    app.callback()(_nothing)  # always a group, even for one command
    register(app)
    group = typer.main.get_command(plain_help(app))
    assert isinstance(group, TyperGroup)
    return dict(group.commands)


def _nothing() -> None:
    """(placeholder callback)"""
