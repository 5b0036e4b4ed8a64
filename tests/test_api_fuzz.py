"""Schemathesis against the server's own OpenAPI document: no input may cause a 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_harness import Server, make_server, remove_created_accounts

ST = Path(sys.executable).with_name("st")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path, "2xA100-80GB")


@pytest.mark.skipif(not ST.exists() and not shutil.which("st"), reason="schemathesis missing")
def test_no_server_errors_on_generated_requests(server: Server) -> None:
    result = subprocess.run(
        [
            str(ST),
            "run",
            f"{server.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {server.token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    remove_created_accounts(server)  # the users the fuzzer made got Unix accounts
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Traceback" not in (server.home / "server.out").read_text()
