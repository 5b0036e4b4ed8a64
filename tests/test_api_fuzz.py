"""Schemathesis with every check (``st run --checks all``) against a real `gpupool up`'s own
OpenAPI document (issue 14): answers must be documented (status codes, content type,
headers, bodies: every error ``{"detail": str}``), schema-valid requests accepted, invalid
ones refused with a 4xx, unserved methods answered 405 with ``Allow``, never a 5xx.

Three runs against one server (SQLite), each with a fixed seed and no example database, so
that CI draws the same requests every time:

1. a non-admin user's token on every operation but revoking a token by id;
2. the admin's token on the admin operations (teams, users, tokens, audit) that delete,
   disable or revoke nothing;
3. last, a second token of the non-admin user on revoking a token by id: the fuzzer may well
   revoke the very token it sends, after which all it gets is 401.

What the fuzzer submits must not keep the server busy or run anything that matters: the
user's team has no GPU quota and may borrow none, so its GPU jobs stay pending (they are
cancelled before the admin run, which may raise that team's quota); its CPU-only jobs and
pipeline steps do start, as the unprivileged account ``nobody`` (server running as root),
and fail: the program they name is random text. Users the admin run creates get Unix accounts
(``gp-<name>``), removed when the module ends.

The configuration (``fuzz_config``) writes the reason next to each setting; ``bench/
api_fuzz_bench.py`` runs the same configuration for longer and records its figures.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_harness import Server, make_server, remove_created_accounts

ST = Path(sys.executable).with_name("st")
SEED = 20240614
MAX_EXAMPLES = 4
"""Per operation and phase: modest, so that the module takes about a minute on 2 cores."""

ACCEPTED_BUT_422 = ["2xx", "401", "403", "404", "409", "422"]
"""``positive_data_acceptance`` answers for operations whose inputs the server also checks
against rules no JSON Schema can state; schemathesis's default list minus 3xx/429/5xx (none
of which this API answers on purpose), plus the 422 those rules give."""

SERVER_RULES: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/jobs"): "gpu_model/queue must exist in the pool; gpus is a fraction "
    "below 1 (at least 0.001) or a whole number; command[0] non-empty; env names without '='",
    ("POST", "/api/v1/pipeline-runs"): "a step gives exactly one of command/http/pipeline; "
    "the step graph must be acyclic with known references and params",
    ("POST", "/api/v1/pipelines/validate"): "the same step and graph rules (it checks them)",
    ("PUT", "/api/v1/pipeline-schedules"): "the same rules, and the cron expression's syntax",
    ("POST", "/api/v1/sim/runs"): "nodes/pods name trace files the team uploaded (or both "
    "'synthetic')",
    ("PUT", "/api/v1/sim/traces/{name}"): "the CSV body is streamed, so the document shows "
    "none: an empty or random body is not a trace; name must end in .csv",
    ("POST", "/api/v1/users"): "unix_user must be an existing Unix account of the machine",
}
"""Operations allowed a 422 on schema-valid input, each with the rule behind it: the rule is
the API's on purpose (documented in its 422 description), not a gap in its schema. Besides
these, every paged listing (see ``paged_listings``)."""
CURSOR_RULE = "its cursor is opaque: only one that this listing handed out is valid"

ADMIN_FILTER = [
    "--include-path-regex", "^/api/v1/(teams|users|tokens|audit)",
    "--exclude-method", "DELETE",
    "--exclude-path-regex", "/(disable|revoke)$",
]
REVOKE_ONE = "/api/v1/tokens/{token_id}/revoke"


def paged_listings(spec: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(GET, path) of each operation of the OpenAPI ``spec`` that takes a ``cursor``."""
    found = {}
    for path, item in spec["paths"].items():
        params = item.get("get", {}).get("parameters", [])
        if any(p.get("name") == "cursor" and p.get("in") == "query" for p in params):
            found["GET", path] = CURSOR_RULE
    return found


def fuzz_config(spec: dict[str, Any]) -> str:
    """The schemathesis.toml of every run against the OpenAPI ``spec``: checks all on,
    generation and the per-operation exceptions configured, each with its reason."""
    lines = [
        "[generation]",
        "# The API refuses a NUL character and lone surrogates in every string, anywhere",
        "# (422, server/api/hostile.py, and said in every 422 description); tests/",
        "# test_hostile_strings.py checks that. Here positive cases must be storable text.",
        "allow-x00 = false",
        'codec = "utf-8"',
        "# Reproducible: the fixed --seed alone decides the requests, no stored examples.",
        'database = "none"',
    ]
    for (method, path), reason in {**paged_listings(spec), **SERVER_RULES}.items():
        lines += [
            "",
            f"# {method} {path}: 422 for schema-valid input, on purpose: {reason}.",
            "[[operations]]",
            f'include-path = "{path}"',
            f'include-method = "{method}"',
            "checks.positive_data_acceptance.expected-statuses = "
            + json.dumps(ACCEPTED_BUT_422),  # a JSON list of strings is a TOML array
        ]
    return "\n".join(lines) + "\n"


def st_command(config: Path, url: str, token: str, *, seed: int, max_examples: int,
               filters: list[str], extra: list[str] | None = None) -> list[str]:
    """``st run --checks all`` against ``url``'s OpenAPI as ``token``, one worker."""
    return [
        str(ST), "--config-file", str(config), "run", f"{url}/openapi.json",
        "--checks", "all",
        "-H", f"Authorization: Bearer {token}",
        "--seed", str(seed), "--max-examples", str(max_examples),
        "--workers", "1", "--no-color",
        *filters, *(extra or []),
    ]


@dataclass
class FuzzUser:
    name: str
    tokens: list[str]


def fuzz_user(server: Server, tokens: int = 2) -> FuzzUser:
    """A non-admin user in a team without GPU quota (nothing borrowable), with ``tokens``
    tokens; its workloads run as ``nobody`` when the server is root (no account made)."""
    root = os.geteuid() == 0
    unix = {"unix_user": "nobody"} if root and _account_exists("nobody") else {}
    with server.client() as admin:
        made = admin.post("/teams", json={"name": "fuzzers", "quota_gpus": 0,
                                          "borrow_limit_gpus": 0})
        assert made.status_code == 201, made.text
        made = admin.post("/users", json={"name": "fuzzer", "team": "fuzzers", **unix})
        assert made.status_code == 201, made.text
        assert made.json()["unix_user"] != "root"
        minted = [admin.post("/tokens", json={"user": "fuzzer"}) for _ in range(tokens)]
        assert all(t.status_code == 201 for t in minted)
    return FuzzUser("fuzzer", [t.json()["token"] for t in minted])


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def cancel_pending(server: Server, user: str) -> None:
    """Cancel ``user``'s jobs that have not ended (so a raised quota starts none of them);
    the admin lists every team's."""
    with server.client() as admin:
        for job in admin.get("/jobs", params={"limit": 10000}).json():
            if job["user"] == user and job["phase"] in ("pending", "starting", "running"):
                admin.post(f"/jobs/{job['id']}/cancel")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for server in make_server("sqlite", tmp_path_factory.mktemp("fuzz"), "1xA100-80GB"):
        try:
            yield server
        finally:
            remove_created_accounts(server)  # the users the admin run made got Unix accounts


@pytest.fixture(scope="module")
def spec(server: Server) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(server.url + "/openapi.json", timeout=30).json()
    return document


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, spec: dict[str, Any]) -> Path:
    path = tmp_path_factory.mktemp("st") / "schemathesis.toml"
    path.write_text(fuzz_config(spec))
    return path


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


@pytest.mark.skipif(not ST.exists() and not shutil.which("st"), reason="schemathesis missing")
def test_all_checks_pass_as_a_user_and_as_an_admin(server: Server, config: Path) -> None:
    """The three runs of the module docstring each exit 0 (no check failed), the user's
    token still works after its run, and the server logged no traceback."""
    user = fuzz_user(server)
    cwd = config.parent  # st writes nothing here, but keep any stray file out of the repo
    _run(st_command(config, server.url, user.tokens[0], seed=SEED, max_examples=MAX_EXAMPLES,
                    filters=["--exclude-path", REVOKE_ONE]), cwd)
    with server.client(user.tokens[0]) as c:  # the run above exercised a live token
        assert c.get("/whoami").json()["user"] == user.name
    cancel_pending(server, user.name)
    _run(st_command(config, server.url, server.token, seed=SEED, max_examples=MAX_EXAMPLES,
                    filters=ADMIN_FILTER), cwd)
    _run(st_command(config, server.url, user.tokens[1], seed=SEED, max_examples=MAX_EXAMPLES,
                    filters=["--include-path", REVOKE_ONE]), cwd)
    assert "Traceback" not in (server.home / "server.out").read_text()


def test_config_names_only_real_operations(spec: dict[str, Any]) -> None:
    """Every exception of the configuration names an operation the document has, and the
    paged listings are found."""
    for method, path in SERVER_RULES:
        assert method.lower() in spec["paths"].get(path, {}), (method, path)
    assert ("GET", "/api/v1/jobs") in paged_listings(spec)
    assert REVOKE_ONE in spec["paths"]
