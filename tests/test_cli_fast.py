"""The fast CLI and its help (issue 15, items 6 and 7). Behaviour, not timings (those are in
bench/cli_bench.py): `gpupool --help`, `--version` and `ps` do not import the simulator,
numpy, matplotlib or the server; every command is still in the Typer tree, its listed help
matching its own; the help is plain text without `<bool>` placeholders or swallowed
brackets; `--version` and shell completion work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gpupool import __version__
from gpupool.cli import choices
from gpupool.cli.main import COMMANDS, app
from server_harness import Server, make_server

HEAVY = ("matplotlib", "numpy", "gpupool.sim", "gpupool.server", "gpupool.plugins",
         "gpupool.core", "gpupool.executors", "sqlalchemy", "fastapi", "uvicorn")
CLIENT = ("httpx", "pydantic", "rich", "yaml", "gpupool.sdk", "gpupool.schemas")
# Runs the CLI as its entry point does, then writes the names of the modules it imported.
WRAPPER = ("import atexit, json, sys\n"
           "out = sys.argv.pop(1)\n"
           "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
           "sys.argv[0] = 'gpupool'\n"
           "from gpupool.cli.main import app\n"
           "app()\n")


def imported(tmp_path: Path, *args: str, env: dict[str, str] | None = None
             ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(out), *args],
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=60)
    return done, set(json.loads(out.read_text()))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    modules = modules - {"httpx._main"}  # the stand-in of cli/lean.py, not httpx
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("fast"), "1xA100-80GB")


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_neither_the_client_nor_anything_heavy(
    tmp_path: Path, args: list[str]
) -> None:
    done, modules = imported(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert loaded(modules, HEAVY + CLIENT) == []


def test_ps_imports_nothing_heavy(tmp_path: Path, server: Server) -> None:
    with server.client() as c:
        assert c.post("/jobs", json={"command": ["true"]}).status_code == 201
    done, modules = imported(tmp_path, "ps", "--all", env=server.env)
    assert done.returncode == 0, done.stderr
    assert "true" in done.stdout
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, ("click", "pygments")) == []  # httpx's own CLI: skipped


@pytest.mark.parametrize("args", [["up", "--help"], ["sim", "--help"], ["down", "--help"],
                                  ["pipeline", "--help"], ["admin", "--help"], ["version"]])
def test_other_commands_help_imports_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    done, modules = imported(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert loaded(modules, HEAVY) == [], args


def test_version_flag_prints_the_version() -> None:
    done = subprocess.run([sys.executable, "-m", "gpupool.cli.main", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == f"gpupool {__version__}"


def _complete(words: str, env_extra: dict[str, str] | None = None) -> list[str]:
    env = {**os.environ, "_GPUPOOL_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
           **(env_extra or {})}
    done = subprocess.run([sys.executable, "-c", WRAPPER, os.devnull], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_shell_completion_offers_commands_options_and_policies() -> None:
    assert set(_complete("gpupool p")) == {"ps", "pipeline"}
    assert "down" in _complete("gpupool ")
    assert "--cancel-jobs" in _complete("gpupool down --c")
    assert set(_complete("gpupool up --policy b")) == {"bestfit", "binpack"}
    assert "--install-completion" in _complete("gpupool --")


def test_show_completion_prints_a_script() -> None:
    # Typer detects the calling shell from the process tree (shellingham) unless told not
    # to; a test run whose parent shell has exited (CI, a background job) has none to find.
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run([sys.executable, "-c", WRAPPER, os.devnull, "--show-completion",
                           "bash"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "_GPUPOOL_COMPLETE" in done.stdout


def _tree() -> Iterator[tuple[list[str], Any]]:
    def walk(path: list[str], command: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name in getattr(command, "commands", {}):
            yield from walk([*path, name], command.commands[name])

    yield from walk([], typer.main.get_command(app))


def test_help_is_plain_text_without_placeholders_on_flags() -> None:
    runner = CliRunner()
    seen = 0
    for path, _ in _tree():
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        assert "╭" not in result.output, path  # no rich panels (nor rich markup) in help
        seen += 1
    assert seen > 40  # every command and subcommand was shown
    up = runner.invoke(app, ["up", "--help"], terminal_width=200).output
    assert "pip install 'gpupool[ray]'" in up
    assert ", ".join(choices.POLICIES) in up


def test_every_command_is_listed_with_its_own_one_line_help() -> None:
    group = typer.main.get_command(app)
    assert list(group.commands) == list(COMMANDS)  # type: ignore[attr-defined]
    for name, lazy in COMMANDS.items():
        command = group.commands[name]  # type: ignore[attr-defined]
        assert command.get_short_help_str(1000) == lazy.short_help, (
            f"the help of `gpupool {name}` changed: update its line in COMMANDS "
            "(src/gpupool/cli/main.py)")
        assert name == "version" or command.params or command.commands  # type: ignore[attr-defined]


def test_the_job_commands_are_all_in_the_table() -> None:
    from gpupool.cli import jobs_cmd
    from gpupool.cli.lazy import build

    registered = build(jobs_cmd.register)
    assert set(registered) <= set(COMMANDS), (
        "jobs_cmd.register adds a command that src/gpupool/cli/main.py's COMMANDS lacks")
    group = typer.main.get_command(app)
    ps = group.commands["ps"]  # type: ignore[attr-defined]
    assert [(p.opts, p.help) for p in ps.params] == [
        (p.opts, p.help) for p in registered["ps"].params]
    assert ps.help == registered["ps"].help


def test_the_policy_names_of_the_help_are_the_real_ones() -> None:
    from gpupool.plugins import profiles

    assert tuple(profiles.POLICIES) == choices.POLICIES
    assert tuple(profiles.STUDY_VARIANTS) == choices.STUDY_VARIANTS
    assert tuple(profiles.FGD_STUDY_POLICIES) == choices.FGD_STUDY_POLICIES
