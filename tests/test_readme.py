"""README's quickstart runs as written (issue 15): its commands are read from README.md (the
console block between the quickstart markers), run one after another from the checkout's
root against a fresh server, and each one's output is checked against the lines README
shows under it (``...`` standing for anything). The commands reach the test's server through
GPUPOOL_HOME and GPUPOOL_URL only, as a user's shell would reach `./scripts/up.sh`'s."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server_harness import Server, make_server

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
READ_ONLY = {"ps", "describe", "logs", "nodes", "queues"}
"""Commands retried until their output matches (a job may still be starting)."""


@dataclass
class Step:
    command: str
    exit_code: int = 0
    expected: list[str] = field(default_factory=list)


def quickstart(readme: str) -> list[Step]:
    """The `$` commands of the quickstart block with the lines shown under each; a trailing
    ``# exits N`` comment gives the exit code (else 0)."""
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    lines = block.strip().splitlines()
    assert lines[0].startswith("```") and lines[-1] == "```", "the quickstart is one code block"
    steps: list[Step] = []
    for line in lines[1:-1]:
        if line.startswith("$ "):
            command = line[2:]
            code = re.search(r"#\s*exits (\d+)\s*$", command)
            steps.append(Step(command, int(code.group(1)) if code else 0))
        else:
            assert steps, f"output before the first command: {line!r}"
            steps[-1].expected.append(line)
    return steps


def pattern(line: str) -> re.Pattern[str]:
    """``...`` matches anything, a run of spaces any white space, the rest itself."""
    parts = []
    for token in re.split(r"(\.\.\.|\s+)", line.strip()):
        if token == "...":
            parts.append(".*")
        elif token.isspace():
            parts.append(r"\s+")
        elif token:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


def mismatch(expected: list[str], output: str) -> str | None:
    """None when the expected lines appear in the output in this order, each within one
    line (a lone ``...`` skips any lines); else the first one that does not."""
    lines = output.splitlines()
    at = 0
    for want in expected:
        if want.strip() == "...":
            continue
        regex = pattern(want)
        while at < len(lines) and not regex.search(lines[at]):
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # As `./scripts/up.sh` starts it on a machine without GPUs: 4 fake A100s.
    yield from make_server("sqlite", tmp_path_factory.mktemp("readme"), "4xA100-80GB")


def test_the_quickstart_block_parses_into_commands_with_their_output() -> None:
    steps = quickstart((REPO / "README.md").read_text())
    assert len(steps) >= 8
    assert all(s.command.startswith(".venv/bin/gpupool ") for s in steps)
    assert mismatch(["a ... c", "e"], "x\na b c\nd\ne") is None
    assert mismatch(["a ... c", "e"], "e\na b c") == "e"


def test_readme_quickstart_runs_as_written(server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env.update(GPUPOOL_HOME=str(server.home), GPUPOOL_URL=server.url)
    for step in quickstart((REPO / "README.md").read_text()):
        verb = step.command.split()[1]
        deadline = time.time() + (30 if verb in READ_ONLY and "-f" not in step.command else 0)
        while True:
            done = subprocess.run(["bash", "-c", step.command], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=120)
            missing = mismatch(step.expected, done.stdout)
            if (missing is None and done.returncode == step.exit_code) or time.time() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == step.exit_code, (step.command, done.stdout)
        assert missing is None, f"{step.command}\nexpected a line like: {missing}\n" \
                                f"got:\n{done.stdout}"
