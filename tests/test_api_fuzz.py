"""Schemathesis with every check (``st run --checks all``) against the server's own OpenAPI
document (issue 14): answers must be documented (status codes, content type, headers,
bodies: every error ``{"detail": str}``), schema-valid requests accepted, invalid ones
refused with a 4xx, unserved methods answered 405 with ``Allow``, never a 5xx.

Tier: in-process (``inprocess_api.InProcessServer``: the real app, controller and SQLite, no
port, no `gpupool up` process). Schemathesis's own CLI (``st run``: the same arguments and
configuration, so the same requests) runs in this process and reaches the app through its
ASGI transport: every check is about what the app answers, none needs uvicorn. An unhandled
error in the app fails a run either way (its 500 fails ``not_a_server_error``, or the
exception reaches the transport: an error of the run). The server's loops run as `gpupool
up --tick 0.2` runs them beside its requests (``Ticking``: after a request, once 0.2 s have
passed, one pass of the job loop and one of the pipeline engine; a job that starts fails at
once, as the random program it names would), and the simulator's studies run in a child
process (``StudiesApart``), as in a real server's process they ran beside the fuzzer's. A
traceback logged meanwhile (``inproc_http.logged_tracebacks``) fails the test, as one in a
real server's log did. ``bench/api_fuzz_bench.py`` runs the same configuration for longer
against a real `gpupool up`.

Three runs against one server (SQLite), each with a fixed seed and no example database, so
that CI draws the same requests every time:

1. a non-admin user's token on every operation but revoking a token by id;
2. the admin's token on the admin operations (teams, users, tokens, audit) that delete,
   disable or revoke nothing;
3. last, a second token of the non-admin user on revoking a token by id: the fuzzer may well
   revoke the very token it sends, after which all it gets is 401.

What the fuzzer submits must not keep the server busy or run anything that matters: the
user's team has no GPU quota and may borrow none, so its GPU jobs stay pending (they are
cancelled before the admin run, which may raise that team's quota); its CPU-only jobs start
and fail (the executor is scripted: nothing runs), its pipeline steps run as the
unprivileged account ``nobody`` (tests running as root) and fail: the program they name is
random text. Users the admin run creates get Unix accounts (``gp-<name>``) when the tests run
as root, removed when the module ends.

The configuration (``fuzz_config``) writes the reason next to each setting.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.pool
import os
import pwd
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from sqlalchemy import select

from gpupool.executors import accounts
from gpupool.server.db.tables import User
from gpupool.server.services import simulation
from gpupool.sim.study import RunSummary, StudyResult, StudySpec, run_study
from inproc_http import logged_tracebacks
from inprocess_api import InProcessServer

try:
    from click.testing import CliRunner
    from schemathesis import openapi
    from schemathesis.cli import loaders as st_loaders
    from schemathesis.cli import schemathesis as st_cli
    HAVE_ST = True
except ImportError:  # pragma: no cover - schemathesis is a dev dependency
    HAVE_ST = False

ST = Path(sys.executable).with_name("st")
SEED = 20240614
MAX_EXAMPLES = 4
"""Per operation and phase: modest, so that the module takes well under a minute on 2 cores."""
URL = "http://testserver"
"""The in-process server's address as schemathesis's ASGI transport names it."""

ACCEPTED_BUT_422 = ["2xx", "401", "403", "404", "409", "422"]
"""``positive_data_acceptance`` answers for operations whose inputs the server also checks
against rules no JSON Schema can state; schemathesis's default list minus 3xx/429/5xx (none
of which this API answers on purpose), plus the 422 those rules give."""

SERVER_RULES: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/jobs"): "gpu_model/queue must exist in the pool; gpus is a fraction "
    "below 1 (at least 0.001) or a whole number; command[0] non-empty; env names without '='; "
    "a job has a command, a notebook none; idle_timeout_s at most the team's (else the "
    "server's) maximum; a notebook's name not that of a live workload of its team (409)",
    ("POST", "/api/v1/pipeline-runs"): "a step gives exactly one of command/http/pipeline; "
    "the step graph must be acyclic with known references and params",
    ("POST", "/api/v1/pipelines/validate"): "the same step and graph rules (it checks them)",
    ("PUT", "/api/v1/pipeline-schedules"): "the same rules, and the cron expression's syntax",
    ("POST", "/api/v1/sim/runs"): "nodes/pods name trace files the team uploaded (or both "
    "'synthetic')",
    ("PUT", "/api/v1/sim/traces/{name}"): "the CSV body is streamed, so the document shows "
    "none: an empty or random body is not a trace; name must end in .csv",
    ("POST", "/api/v1/users"): "unix_user must be an existing Unix account of the machine",
    ("POST", "/api/v1/teams"): "a team's default notebook idle timeout is at most its "
    "maximum (its own, else the server's)",
    ("PATCH", "/api/v1/teams/{name}"): "the same: a default notebook idle timeout at most the "
    "maximum, after the change",
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


def fuzz_user(admin: httpx.Client, tokens: int = 2) -> FuzzUser:
    """A non-admin user in a team without GPU quota (nothing borrowable), with ``tokens``
    tokens, made through ``admin`` (a client of the server with an admin token); its
    workloads run as ``nobody`` when the server is root (no account made)."""
    root = os.geteuid() == 0
    unix = {"unix_user": "nobody"} if root and _account_exists("nobody") else {}
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


def cancel_pending(admin: httpx.Client, user: str) -> None:
    """Cancel ``user``'s jobs that have not ended (so a raised quota starts none of them);
    ``admin`` (an admin's client) lists every team's."""
    for job in admin.get("/jobs", params={"limit": 10000}).json():
        if job["user"] == user and job["phase"] in ("pending", "starting", "running"):
            admin.post(f"/jobs/{job['id']}/cancel")


class Ticking:
    """``server``'s app, and after a request, once ``tick`` seconds (wall) have passed since
    the last pass, one pass of the job loop (its clock moved on by as much) and one of the
    pipeline engine, as `gpupool up --tick 0.2` runs them beside its requests. A job the loop
    starts fails at once (exit 127: its program is random text). A pass that raises fails
    the request's run, as an unhandled error would."""

    def __init__(self, server: InProcessServer, tick: float = 0.2) -> None:
        self.server = server
        self.tick = tick
        self.last = time.monotonic()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.server.app(scope, receive, send)
        if scope["type"] == "http" and time.monotonic() - self.last >= self.tick:
            await anyio.to_thread.run_sync(self.step)

    def step(self) -> None:
        now = time.monotonic()
        self.server.step(now - self.last)
        self.last = now
        executor = self.server.executor
        for job, attempt in executor.attempts.items():
            if (job, attempt) not in executor.ended:
                executor.end(int(job), 127)
        self.server.app.state.pipelines.step()


class StudiesApart:
    """``run_study`` for the server's simulation runner, each study in a child process (one,
    kept): a real server's studies ran in its own process, beside the fuzzer's; here, on the
    runner's thread, they would hold this process's GIL while the fuzzer waits. The same
    study and result; the progress callbacks come when it ends."""

    def __init__(self) -> None:
        self.pool: multiprocessing.pool.Pool | None = None

    def __call__(self, spec: StudySpec, workers: int | None = None,
                 on_run_done: Callable[[RunSummary], None] | None = None) -> StudyResult:
        if self.pool is None:
            self.pool = multiprocessing.get_context("spawn").Pool(1)
        result: StudyResult = self.pool.apply(run_study, (spec, 1))
        for policy in result.policies.values():
            for summary in policy.runs:
                if on_run_done:
                    on_run_done(summary)
        return result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    srv = InProcessServer(tmp_path_factory.mktemp("fuzz"), nodes=1, cards=1,
                          raise_server_exceptions=False)
    studies = StudiesApart()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(simulation, "run_study", studies)
            yield srv
    finally:
        studies.close()  # the users the admin run made got Unix accounts (tests running as root)
        with srv.db.read() as s:
            rows = s.execute(select(User.name, User.unix_user).where(User.unix_created)).all()
        for name, unix in rows:
            if unix and name != "admin":
                with contextlib.suppress(accounts.AccountError):
                    accounts.remove(unix, name.split("~deleted-")[0])
        srv.db.dispose()


@pytest.fixture(scope="module")
def spec(server: InProcessServer) -> dict[str, Any]:
    document: dict[str, Any] = server.admin.get("http://127.0.0.1/openapi.json").json()
    return document


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, spec: dict[str, Any]) -> Path:
    path = tmp_path_factory.mktemp("st") / "schemathesis.toml"
    path.write_text(fuzz_config(spec))
    return path


def _run(app: Ticking, command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``st`` with ``command``'s arguments, in this process, the document and every request
    going to ``app`` (schemathesis's ASGI transport); it must exit 0."""
    def load(location: str, config: Any) -> Any:
        assert location == f"{URL}/openapi.json", location
        return openapi.from_asgi("/openapi.json", app, config=config._parent)

    monkeypatch.setattr(st_loaders, "load_schema", load)
    result = CliRunner().invoke(st_cli, command[1:])
    assert result.exit_code == 0, result.output[-8000:] + repr(result.exception)


@pytest.mark.skipif(not HAVE_ST, reason="schemathesis missing")
def test_all_checks_pass_as_a_user_and_as_an_admin(
    server: InProcessServer, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three runs of the module docstring each exit 0 (no check failed), the user's
    token still works after its run, and nothing logged a traceback."""
    user = fuzz_user(server.admin)
    app = Ticking(server)
    monkeypatch.chdir(config.parent)  # st writes nothing here, but keep stray files out
    with logged_tracebacks() as tracebacks:
        _run(app, st_command(config, URL, user.tokens[0], seed=SEED,
                             max_examples=MAX_EXAMPLES,
                             filters=["--exclude-path", REVOKE_ONE]), monkeypatch)
        # the run above exercised a live token
        assert server.client(user.tokens[0]).get("/whoami").json()["user"] == user.name
        cancel_pending(server.admin, user.name)
        _run(app, st_command(config, URL, server.token, seed=SEED, max_examples=MAX_EXAMPLES,
                             filters=ADMIN_FILTER), monkeypatch)
        _run(app, st_command(config, URL, user.tokens[1], seed=SEED,
                             max_examples=MAX_EXAMPLES,
                             filters=["--include-path", REVOKE_ONE]), monkeypatch)
    assert tracebacks == []


def test_config_names_only_real_operations(spec: dict[str, Any]) -> None:
    """Every exception of the configuration names an operation the document has, and the
    paged listings are found."""
    for method, path in SERVER_RULES:
        assert method.lower() in spec["paths"].get(path, {}), (method, path)
    assert ("GET", "/api/v1/jobs") in paged_listings(spec)
    assert REVOKE_ONE in spec["paths"]
