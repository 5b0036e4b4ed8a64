"""A longer schemathesis run (``--checks all``) against a real `gpupool up`, with its figures.

The same three runs and configuration as tests/test_api_fuzz.py (read its docstring: a
non-admin user's token on every operation but revoking a token; the admin's on the admin
operations that delete, disable or revoke nothing; then revoking a token), but the first two
given a time budget (``st run --max-time``: fuzzing and stateful testing repeat until it is
spent), on SQLite and, when it answers, on the local PostgreSQL. Writes
bench/results/api_fuzz.md: requests made, answers by status, per check how often it ran and
failed (every failure fails the run), duration, seed and versions.

    .venv/bin/python bench/api_fuzz_bench.py --seconds 240
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import RESULTS, machine
from server_harness import Server, make_server, postgres_available
from test_api_fuzz import (
    ADMIN_FILTER,
    REVOKE_ONE,
    SEED,
    cancel_pending,
    fuzz_config,
    fuzz_user,
    st_command,
)

ADMIN_SHARE = 0.25
"""Of a backend's seconds, the admin run's share (it covers 9 operations, the user's 40)."""


@dataclass
class Tally:
    """What one or more ``st run``s did, from their NDJSON event reports."""

    seconds: float = 0.0
    cases: int = 0
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    checks: Counter[tuple[str, str]] = field(default_factory=Counter)
    operations: set[str] = field(default_factory=set)
    failures: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(check, operation, status answered): how many cases failed so."""
    exit_codes: list[int] = field(default_factory=list)

    def add_report(self, ndjson: Path) -> None:
        with ndjson.open() as lines:
            for line in lines:
                event = json.loads(line)
                finished = event.get("ScenarioFinished")
                if not finished:
                    continue
                recorder = finished["recorder"]
                if recorder["label"] != "Stateful tests":
                    self.operations.add(recorder["label"])
                self.cases += len(recorder.get("cases", {}))
                answered: dict[str, str] = {}
                for case_id, interaction in recorder.get("interactions", {}).items():
                    self.requests += 1
                    response = interaction.get("response")
                    code = str(response["status_code"]) if response else "no answer"
                    self.statuses[code] += 1
                    answered[case_id] = code
                cases = recorder.get("cases", {})
                for case_id, checks in recorder.get("checks", {}).items():
                    for check in checks:
                        self.checks[check["name"], check["status"]] += 1
                        if check["status"] == "failure":
                            case = cases.get(case_id, {}).get("value", {})
                            operation = f"{case.get('method', '?')} {case.get('path', '?')}"
                            self.failures[check["name"], operation,
                                          answered.get(case_id, "?")] += 1


def run_st(command: list[str], report_dir: Path, tally: Tally, log: Path) -> None:
    """Run one ``st run`` writing its NDJSON report into ``report_dir``; add it to ``tally``."""
    started = time.monotonic()
    with log.open("a") as out:
        done = subprocess.run([*command, "--report", "ndjson", "--report-dir", str(report_dir)],
                              stdout=out, stderr=subprocess.STDOUT, timeout=3600,
                              cwd=report_dir)
    tally.seconds += time.monotonic() - started
    tally.exit_codes.append(done.returncode)
    for report in sorted(report_dir.glob("*.ndjson")):
        tally.add_report(report)
        report.unlink()


def fuzz_backend(backend: str, seconds: int, work: Path) -> Tally:
    """The three runs against a fresh server on ``backend`` (user and admin runs share
    ``seconds``); a traceback in the server's log counts as a failure (exit code -1)."""
    tally = Tally()
    log = work / f"{backend}.log"
    for server in make_server(backend, work / backend, "1xA100-80GB"):
        try:
            fuzz_server(server, seconds, work, tally, log)
            if "Traceback" in (server.home / "server.out").read_text():
                tally.exit_codes.append(-1)
                shutil.copy(server.home / "server.out", work / f"{backend}-server.out")
        finally:
            _remove_created_accounts(server)
    return tally


def fuzz_server(server: Server, seconds: int, work: Path, tally: Tally, log: Path) -> None:
    """The three runs of ``fuzz_backend`` against ``server``, added to ``tally``."""
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    config = work / "schemathesis.toml"
    config.write_text(fuzz_config(spec))
    with server.client() as admin:
        user = fuzz_user(admin)
    admin_s = max(1, round(seconds * ADMIN_SHARE))
    user_s = max(1, seconds - admin_s)
    run_st(st_command(config, server.url, user.tokens[0], seed=SEED, max_examples=100,
                      filters=["--exclude-path", REVOKE_ONE],
                      extra=["--max-time", str(user_s)]), work, tally, log)
    with server.client() as admin:
        cancel_pending(admin, user.name)
    run_st(st_command(config, server.url, server.token, seed=SEED, max_examples=100,
                      filters=ADMIN_FILTER, extra=["--max-time", str(admin_s)]), work, tally, log)
    run_st(st_command(config, server.url, user.tokens[1], seed=SEED, max_examples=100,
                      filters=["--include-path", REVOKE_ONE]), work, tally, log)


def _remove_created_accounts(server: Server) -> None:
    """Remove the Unix accounts ``server`` (either backend) made for the fuzzer's users."""
    from sqlalchemy import select

    from gpupool.executors import accounts
    from gpupool.server.db.database import Database
    from gpupool.server.db.tables import User

    db = Database(server.database_url or f"sqlite:///{server.home / 'gpupool.db'}")
    try:
        with db.read() as s:
            rows = s.execute(select(User.name, User.unix_user).where(User.unix_created)).all()
    finally:
        db.dispose()
    for name, unix in rows:
        if unix and name != "admin":
            with contextlib.suppress(accounts.AccountError):
                accounts.remove(unix, name.split("~deleted-")[0])


def render(results: dict[str, Tally], seconds: int, skipped: str | None) -> str:
    checks = sorted({name for tally in results.values() for name, _ in tally.checks})
    lines = [
        "# API fuzzing (schemathesis, `--checks all`)",
        "",
        "Generated by `bench/api_fuzz_bench.py` "
        f"(`--seconds {seconds}`): the runs and configuration of `tests/test_api_fuzz.py`",
        "(a non-admin user's token on every operation but revoking a token; the admin's on "
        "the admin",
        "operations that delete, disable or revoke nothing; then revoking a token), the first "
        "two",
        "repeating until their time budget is spent (`st run --max-time`; "
        f"{round(100 * (1 - ADMIN_SHARE))} % / {round(100 * ADMIN_SHARE)} %).",
        "Each backend against a fresh `gpupool up` (fake GPUs) on this machine; one worker.",
        "",
        f"Machine: {machine()}. schemathesis {version('schemathesis')}, hypothesis "
        f"{version('hypothesis')}, gpupool {version('gpupool')}. Seed {SEED}.",
        "",
        "| backend | duration (s) | operations | test cases | requests | 2xx | 4xx | 5xx "
        "| failed checks | exit codes (user, admin, revoke) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, t in results.items():
        by_class = Counter(code[0] + "xx" if code[0].isdigit() else code for code in
                           t.statuses.elements())
        failed = sum(n for (_, status), n in t.checks.items() if status == "failure")
        lines.append(
            f"| {backend} | {t.seconds:.0f} | {len(t.operations)} | {t.cases:,} "
            f"| {t.requests:,} | {by_class['2xx']:,} | {by_class['4xx']:,} "
            f"| {by_class['5xx']:,} | {failed} | {', '.join(map(str, t.exit_codes))} |")
    lines += ["", "Checks: times run (failures).", "",
              "| check | " + " | ".join(results) + " |",
              "|---|" + "---|" * len(results)]
    for name in checks:
        cells = []
        for t in results.values():
            ran = sum(n for (check, _), n in t.checks.items() if check == name)
            failed = t.checks[name, "failure"]
            cells.append(f"{ran:,} ({failed})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    statuses = sorted({code for t in results.values() for code in t.statuses})
    lines += ["", "Answers by status code.", "",
              "| status | " + " | ".join(results) + " |",
              "|---|" + "---|" * len(results)]
    for code in statuses:
        lines.append(f"| {code} | " + " | ".join(f"{t.statuses[code]:,}"
                                                 for t in results.values()) + " |")
    lines += [
        "",
        "A check that does not apply to a case (e.g. `use_after_free` outside stateful "
        "sequences)",
        "counts as run and passed, as schemathesis records it. Configured exceptions (each "
        "with its",
        "reason in `tests/test_api_fuzz.py`): positive cases are storable text (no NUL, UTF-8); "
        "the",
        "operations whose input the server also checks against its state or rules no JSON "
        "Schema",
        "states may answer a schema-valid request with 422. The OpenAPI declares no security "
        "scheme",
        "(the token is a plain `Authorization` header), so `ignored_auth` has nothing to test.",
    ]
    failures = [(backend, key, n) for backend, t in results.items()
                for key, n in sorted(t.failures.items())]
    if failures:
        lines += ["", "Failed checks: backend, check, operation, status answered, cases.", "",
                  "| backend | check | operation | status | cases |", "|---|---|---|---|---|"]
        lines += [f"| {backend} | {check} | `{operation}` | {status} | {n} |"
                  for backend, (check, operation, status), n in failures]
    if skipped:
        lines += ["", f"PostgreSQL not run: {skipped}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=240,
                        help="time budget of the user and admin runs, per backend")
    parser.add_argument("--out", type=Path, default=RESULTS / "api_fuzz.md")
    args = parser.parse_args()
    skipped = postgres_available()
    backends = ["sqlite"] + ([] if skipped else ["postgres"])
    results: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory(prefix="api-fuzz-") as tmp:
        for backend in backends:
            work = Path(tmp) / backend
            work.mkdir()
            results[backend] = fuzz_backend(backend, args.seconds, work)
            print(backend, results[backend], flush=True)
            if any(results[backend].exit_codes):
                kept = Path(tempfile.mkdtemp(prefix="api-fuzz-failed-"))
                shutil.copytree(work, kept, dirs_exist_ok=True)
                print(f"failures: see {kept}/{backend}.log", flush=True)
    args.out.write_text(render(results, args.seconds, skipped))
    print(f"wrote {args.out}")
    if any(code for t in results.values() for code in t.exit_codes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
