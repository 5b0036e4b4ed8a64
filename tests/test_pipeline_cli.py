"""`gpupool pipeline ...` as a user types it, against a real server: the examples run and
`run --wait` exits 0 only on success, `describe` draws the DAG, `ls --json`, `logs`,
`retry`, `secret`, and invalid files are refused naming the problem (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import EXAMPLES
from server_harness import Server, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The HTTP steps here call servers on 127.0.0.1, which only an admin's allow list permits.
    yield from make_server("sqlite", tmp_path_factory.mktemp("cli"), "1xA100-80GB",
                           {"GPUPOOL_HTTP_ALLOW_HOSTS": "127.0.0.1"})


def gp(server: Server, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", "pipeline", *args],
                          env=server.env, input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_examples_run_and_describe_draws_the_dag(server: Server, tmp_path: Path) -> None:
    for example in sorted(EXAMPLES.glob("*.yaml")):
        checked = gp(server, "validate", str(example))
        assert checked.returncode == 0, checked.stderr
    done = gp(server, "run", str(EXAMPLES / "five_steps.yaml"), "-p", "rows=20", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "five-steps  run 1: succeeded" in done.stdout
    tree = gp(server, "describe", "1").stdout
    assert "└── ✓ extract  succeeded  [shell]" in tree
    assert "    ├── ✓ features  succeeded  [shell]" in tree
    assert "    │   └── ✓ train  succeeded  [job]  job 1" in tree
    assert "    │       └── ✓ evaluate  succeeded  [shell]" in tree
    assert "train (see above)" in tree and "row_count = 20" in tree
    flaky = gp(server, "run", str(EXAMPLES / "flaky_retry.yaml"), "-p",
               f"counter={tmp_path / 'count'}", "--wait", "--json")
    assert flaky.returncode == 0, flaky.stderr
    by = {s["name"]: s for s in json.loads(flaky.stdout)["steps"]}
    assert by["flaky"]["attempt"] == 3 and by["optional"]["state"] == "failed"
    assert "flaky succeeded after 3 tries" in gp(server, "logs", "2", "done").stdout
    assert gp(server, "secret", "set", "API_TOKEN", stdin="s3cr3t-cli\n").returncode == 0
    key = tmp_path / "key.pem"
    key.write_text("PRIVATE-KEY-BYTES\n")
    assert gp(server, "secret", "set", "TLS_KEY", "--from-file", str(key)).returncode == 0
    assert "s3cr3t" not in gp(server, "secret", "ls").stdout
    third = gp(server, "run", str(EXAMPLES / "secrets_and_http.yaml"), "-p",
               f"health_url={server.url}/healthz", "--wait")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "verdict = ok" in third.stdout
    logs = gp(server, "logs", "3").stdout
    assert "token is ***" in logs and "s3cr3t-cli" not in logs
    listed = json.loads(gp(server, "ls", "--json").stdout)
    assert [(r["id"], r["state"], r["trigger"]) for r in listed] == [
        ("4", "succeeded", "parent"),  # the nested pipeline's child run
        ("3", "succeeded", "manual"), ("2", "succeeded", "manual"), ("1", "succeeded", "manual")]


def test_run_wait_fails_on_a_failed_run_and_retry_reruns(server: Server, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    definition = {"name": "breaks", "steps": [
        {"name": "ok", "kind": "shell", "command": "echo fine"},
        {"name": "broken", "kind": "shell", "depends_on": ["ok"],
         "command": f"test -e {fixed} || {{ echo 'boom'; exit 4; }}"}]}
    path = tmp_path / "breaks.yaml"
    path.write_text(yaml.safe_dump(definition))
    failed = gp(server, "run", str(path), "--wait")
    assert failed.returncode == 1
    assert "✗ broken  failed" in failed.stdout and "exit code 4" in failed.stdout
    run_id = failed.stdout.split(" run ")[1].split(":")[0]
    fixed.touch()
    again = gp(server, "retry", run_id, "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "↺ ok  reused" in again.stdout


def test_invalid_files_are_refused_naming_the_problem(server: Server, tmp_path: Path) -> None:
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(yaml.safe_dump({"name": "c", "steps": [
        {"name": "a", "command": "true", "depends_on": ["b"]},
        {"name": "b", "command": "true", "depends_on": ["a"]}]}))
    result = gp(server, "run", str(cycle))
    assert result.returncode == 2 and "dependency cycle: a → b → a" in result.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\nsteps:\n  - name: a\n    comand: true\n")
    result = gp(server, "validate", str(typo))
    assert result.returncode == 2 and "comand" in result.stderr
    result = gp(server, "run", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "cannot read the pipeline" in result.stderr
