"""How clients find the server (env, data dir, nothing), and the CLI's local failures: a bad
job file is rejected before any request, and an absent server exits 3 with one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gpupool.sdk import ConfigError, ServerConfig, discover
from gpupool.sdk.config import NOTHING_CONFIGURED


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data dir, and no GPUPOOL_URL / GPUPOOL_TOKEN from the outside."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("GPUPOOL_HOME", str(path))
    monkeypatch.delenv("GPUPOOL_URL", raising=False)
    monkeypatch.delenv("GPUPOOL_TOKEN", raising=False)
    return path


def write_local_server(home: Path, url: str = "http://127.0.0.1:8470", token: str = "gp_a") -> None:
    (home / "server.json").write_text(json.dumps({"url": url, "pid": 1}) + "\n")
    (home / "admin.token").write_text(token + "\n")
    (home / "admin.token").chmod(0o600)


def test_nothing_configured_says_what_to_do(home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        discover()
    assert str(info.value) == NOTHING_CONFIGURED
    assert "GPUPOOL_URL" in NOTHING_CONFIGURED and "gpupool up" in NOTHING_CONFIGURED


def test_the_data_dir_of_gpupool_up_needs_no_configuration(home: Path) -> None:
    write_local_server(home, "http://127.0.0.1:9999/")
    config = discover()
    assert config == ServerConfig("http://127.0.0.1:9999", "gp_a", str(home / "server.json"))
    assert "gp_a" not in repr(config)


def test_environment_wins_over_the_data_dir(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_local_server(home)
    monkeypatch.setenv("GPUPOOL_URL", "https://gpus.example.com")
    monkeypatch.setenv("GPUPOOL_TOKEN", "gp_env")
    assert discover() == ServerConfig("https://gpus.example.com", "gp_env", "GPUPOOL_URL")


def test_arguments_win_over_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPOOL_URL", "https://gpus.example.com")
    monkeypatch.setenv("GPUPOOL_TOKEN", "gp_env")
    config = discover("http://other:1", "gp_arg")
    assert (config.url, config.token, config.source) == ("http://other:1", "gp_arg", "--url")


def test_env_token_with_the_local_url(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_local_server(home)
    monkeypatch.setenv("GPUPOOL_TOKEN", "gp_mine")
    assert discover() == ServerConfig("http://127.0.0.1:8470", "gp_mine", str(home / "server.json"))


def test_the_local_admin_token_never_goes_to_another_server(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_local_server(home)
    monkeypatch.setenv("GPUPOOL_URL", "https://gpus.example.com")
    with pytest.raises(ConfigError, match="no token for the gpupool server at https://gpus"):
        discover()
    # ... but it does go to the local server, however its URL was given.
    assert discover(url="http://127.0.0.1:8470/").token == "gp_a"


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{not json", "not valid JSON"), ('{"pid": 3}', 'no "url"'), ("[]", 'no "url"')],
)
def test_a_broken_server_file_is_named(home: Path, content: str, problem: str) -> None:
    (home / "server.json").write_text(content)
    with pytest.raises(ConfigError, match=problem) as info:
        discover()
    assert str(home / "server.json") in str(info.value)


def test_a_url_without_scheme_is_rejected(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPOOL_URL", "localhost:8470")
    monkeypatch.setenv("GPUPOOL_TOKEN", "gp_x")
    with pytest.raises(ConfigError, match="GPUPOOL_URL: the server URL must start with http"):
        discover()


def test_server_file_without_token_file(home: Path) -> None:
    (home / "server.json").write_text('{"url": "http://127.0.0.1:8470"}')
    with pytest.raises(ConfigError, match="set GPUPOOL_TOKEN or pass --token"):
        discover()


# --- the CLI, as a process -------------------------------------------------------------------


def gpupool(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    environ.update(GPUPOOL_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "gpupool.cli.main", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        cwd=home,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "command: [python, train.py]\ngpuz: 1\n",
            "job.yaml: field 'gpuz': extra inputs are not permitted",
        ),
        ("command: [x]\ngpus: 1.5\n", "job.yaml: gpus: use a fraction below 1 or a whole number"),
        ("command: [x]\nmemory: 16XB\n", "job.yaml: field 'memory': unknown unit 'XB' in '16XB'"),
        ("gpus: 1\n", "job.yaml: command: a job needs a command"),
        ("command: [x]\npriority: high\n", "job.yaml: field 'priority': input should be a valid"),
        ("command: [x]\nenv: {A: [1]}\n", "job.yaml: field 'env.A': input should be a valid str"),
        ("command: [x\ngpus: 1\n", "job.yaml: line 2, column 5: "),
        ("command:\n  - x\n gpus: 1\n", "job.yaml: line 3, column 2: "),
        ("- just\n- a list\n", "job.yaml: expected a mapping of job fields"),
        ("", "job.yaml: expected a mapping of job fields (command: [...], ...), found nothing"),
    ],
)
def test_submit_validates_the_file_before_any_request(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    (tmp_path / "job.yaml").write_text(yaml_text)
    # No server configured at all: a request would fail differently.
    result = gpupool("submit", "job.yaml", home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert one_error_line(result).removeprefix("error: ").startswith(expected), result.stderr
    assert result.stdout == ""


def test_submit_of_a_missing_file_names_it(tmp_path: Path) -> None:
    result = gpupool("submit", "nope.yaml", home=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml: cannot read it" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--env", "FOO", "--", "true"], "--env 'FOO': expected NAME=VALUE"),
        (["--gpus", "1.5", "--", "true"], "gpus: use a fraction below 1 or a whole number"),
        (["--gpus", "lots", "--", "true"], "--gpus: input should be a valid number"),
        (["--grace-period", "-1", "--", "true"], "--grace-period: input should be greater"),
        (["--restart", "always", "--", "true"], "--restart: input should be 'never'"),
        (["--gpus", "1"], "give the command to run"),
    ],
)
def test_run_rejects_bad_options_locally(tmp_path: Path, args: list[str], expected: str) -> None:
    result = gpupool("run", *args, home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in one_error_line(result)


def test_no_server_configured_is_a_usage_error(tmp_path: Path) -> None:
    result = gpupool("ps", home=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result) == f"error: {NOTHING_CONFIGURED}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["ps"], ["nodes", "--json"], ["logs", "-f", "7"]])
def test_an_unreachable_server_exits_3_with_one_line(tmp_path: Path, command: list[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = gpupool(*command, home=tmp_path, GPUPOOL_URL=url, GPUPOOL_TOKEN="gp_x")
    assert result.returncode == 3, result.stderr
    line = one_error_line(result)
    assert line.startswith(f"error: cannot reach the gpupool server at {url}: ")
    assert result.stdout == ""


def test_unreachable_local_server_hints_at_gpupool_up(tmp_path: Path) -> None:
    write_local_server(tmp_path, f"http://127.0.0.1:{closed_port()}")
    result = gpupool("ps", home=tmp_path)
    assert result.returncode == 3
    assert "is `gpupool up` still running" in one_error_line(result)
