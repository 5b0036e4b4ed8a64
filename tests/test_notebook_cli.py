"""Notebooks from the command line: `gpupool notebook ...`, `gpupool shell`, the KIND column
of `gpupool ps`, `describe` of a notebook and `gpupool submit` of a `kind: notebook` file.

Tested against the wire contract only: the commands run in this process against
``notebook_fake.FakePool``, a small FastAPI app served over HTTP that answers the notebook
endpoints with JobView payloads and plays the gateway's part for `gpupool shell`. The
server's own behaviour (placement, suspension, the gateway) is tested with the server; the
SDK's notebook methods in tests/test_notebook_sdk.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from gpupool.cli import jobs_cmd, jobs_render, notebook_cmd, ps_table, terminal
from gpupool.cli.job_cells import KINDS, json_row, view_row
from gpupool.cli.main import app
from gpupool.schemas.jobs import JobView, Kind
from notebook_fake import FakePool, job_json, serve

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def served() -> Iterator[FakePool]:
    with serve() as pool:
        yield pool


@pytest.fixture
def pool(served: FakePool, monkeypatch: pytest.MonkeyPatch) -> FakePool:
    """The served fake, emptied; waits do not sleep."""
    fresh = FakePool()
    served.__dict__.update({k: v for k, v in fresh.__dict__.items() if k not in ("url", "app")})
    monkeypatch.setattr(notebook_cmd, "POLL_S", 0)
    return served


def gpupool(pool: FakePool, *args: str, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """`gpupool ARGS` against the fake, in this process: exit code, stdout, stderr."""
    env = {"GPUPOOL_URL": pool.url, "GPUPOOL_TOKEN": "gp_ada", "COLUMNS": "200"}
    done = CliRunner().invoke(app, list(args), env=env, input=input)
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


# --- gpupool notebook ... -----------------------------------------------------------------

def test_create_sends_a_notebook_and_prints_its_id_without_waiting(pool: FakePool) -> None:
    done = gpupool(pool, "notebook", "create", "--name", "ada-nb", "--gpus", "0.25",
                   "--idle-timeout", "30m", "--gpu-memory", "10GiB", "-e", "A=1", "--no-wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1\n"
    assert "notebook ada-nb is pending; `gpupool notebook open ada-nb`" in done.stderr
    assert pool.posted == [{"kind": "notebook", "name": "ada-nb", "gpus": 0.25,
                            "gpu_memory": 10240, "idle_timeout_s": 1800.0, "env": {"A": "1"}}]


def test_create_waits_until_it_answers_then_prints_the_url(pool: FakePool) -> None:
    pool.ready_after = 3
    done = gpupool(pool, "notebook", "create", "--gpus", "0.125")
    assert done.returncode == 0, done.stderr
    assert done.stdout == pool.lab("1") + "\n"
    lines = done.stderr.splitlines()  # not a terminal: one line per change, no spinner
    assert lines == ["notebook notebook-1 (1) is pending: waiting for a GPU share of 0.25",
                     "notebook notebook-1 (1) is running: waiting for JupyterLab to answer"]


def test_create_json_is_the_notebook(pool: FakePool) -> None:
    done = gpupool(pool, "notebook", "create", "--name", "j", "--json")
    shown = json.loads(done.stdout)
    assert shown["kind"] == "notebook" and shown["url"] == pool.lab("1")
    assert set(shown) == set(JobView.model_fields)
    later = json.loads(gpupool(pool, "notebook", "create", "--name", "k", "--json",
                               "--no-wait").stdout)
    assert later["phase"] == "pending" and later["url"] is None


@pytest.mark.parametrize("args, message", [
    (["--idle-timeout", "5x"], "--idle-timeout: '5x' is not a duration"),
    (["--idle-timeout", "1"], "--idle-timeout: input should be greater than or equal to 5"),
    (["--gpus", "1.5"], "gpus: use a fraction below 1 or a whole number of GPUs"),
    (["--gpu-memory", "lots"], "--gpu-memory:"),
    (["--name", "two words"], "--name: string should match pattern"),
    (["--env", "NOEQUALS"], "--env 'NOEQUALS': expected NAME=VALUE"),
])
def test_create_refuses_bad_options_naming_them(pool: FakePool, args: list[str],
                                                message: str) -> None:
    done = gpupool(pool, "notebook", "create", *args)
    assert done.returncode == 2, done.stdout
    assert message in " ".join(done.stderr.split())
    assert pool.posted == []


def test_a_name_in_use_is_the_servers_refusal(pool: FakePool) -> None:
    pool.add("3", name="taken")
    done = gpupool(pool, "notebook", "create", "--name", "taken")
    assert done.returncode == 2
    assert "a notebook named taken is already live in team default" in done.stderr


def test_ls_shows_the_live_notebooks(pool: FakePool) -> None:
    pool.add("1", name="old", phase="cancelled")
    pool.add("2", name="nap", phase="suspended")
    pool.add("3", name="busy")
    pool.add("4", name="idle", idle_since=(datetime.now(UTC) - timedelta(minutes=7)).isoformat())
    pool.add("5", name="batch", kind="job")
    done = gpupool(pool, "notebook", "ls")
    assert done.returncode == 0, done.stderr
    assert pool.queries[-1]["kind"] == ["notebook"]
    assert pool.queries[-1]["phase"] == ["pending", "starting", "running", "suspended"]
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines == [["NAME", "ID", "PHASE", "GPUS", "IDLE", "URL"],
                     ["idle", "4", "running", "0.25", "7m", pool.lab("4")],
                     ["busy", "3", "running", "0.25", "busy", pool.lab("3")],
                     ["nap", "2", "suspended", "0.25", "-", "-"]]
    every = gpupool(pool, "notebook", "ls", "--all", "--json")
    assert "phase" not in pool.queries[-1]
    assert [v["name"] for v in json.loads(every.stdout)] == ["idle", "busy", "nap", "old"]


def test_ls_without_notebooks_says_how_to_make_one(pool: FakePool) -> None:
    done = gpupool(pool, "notebook", "list")
    assert done.returncode == 0 and "no notebooks (gpupool notebook create" in done.stdout


def test_open_prints_the_url(pool: FakePool) -> None:
    pool.add("3", name="mine")
    for ref in ("mine", "3"):
        done = gpupool(pool, "notebook", "open", ref)
        assert (done.returncode, done.stdout) == (0, pool.lab("3") + "\n"), done.stderr


@pytest.mark.parametrize("fields, args, message", [
    ({}, ["ghost"], "no notebook named 'ghost' (gpupool notebook ls lists yours)"),
    ({"kind": "job"}, ["8"], "job 8 is not a notebook"),
    ({"phase": "suspended"}, ["nb"], "notebook nb is suspended: resume it with `gpupool "
                                     "notebook resume nb` (or open it with --resume)"),
    ({"phase": "cancelled"}, ["nb"], "notebook nb (8) ended: cancelled (gpupool notebook "
                                     "create makes a new one)"),
    ({"phase": "pending"}, ["nb", "--no-wait"], "notebook nb does not answer yet (notebook "
                                                "nb (8) is pending)"),
])
def test_open_says_why_there_is_no_url(pool: FakePool, fields: dict[str, Any],
                                       args: list[str], message: str) -> None:
    pool.add("8", **fields)
    done = gpupool(pool, "notebook", "open", *args)
    assert done.returncode == 1, done.stdout
    assert message in " ".join(done.stderr.split())
    assert done.stdout == ""


def test_open_resume_starts_a_suspended_notebook_and_waits(pool: FakePool) -> None:
    pool.add("6", name="nap", phase="suspended")
    done = gpupool(pool, "notebook", "open", "nap", "--resume")
    assert done.returncode == 0, done.stderr
    assert done.stdout == pool.lab("6") + "\n"
    assert "resuming notebook nap" in done.stderr


def test_open_browser_opens_a_one_time_address(pool: FakePool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    opened: list[str] = []
    def browser(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr(webbrowser, "open", browser)
    pool.add("2", name="lab")
    done = gpupool(pool, "notebook", "open", "lab", "--browser")
    assert done.returncode == 0, done.stderr
    assert opened == [f"{pool.url}/nb/2/signin?once=s3cret"]
    assert done.stdout == opened[0] + "\n"
    assert "opened in your browser" in done.stderr
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    again = gpupool(pool, "notebook", "open", "lab", "--browser")
    assert "no browser could be started" in again.stderr


def test_suspend_resume_and_delete(pool: FakePool) -> None:
    pool.add("4", name="work")
    done = gpupool(pool, "notebook", "suspend", "work")
    assert done.returncode == 0, done.stderr
    assert "notebook work suspended: its files are kept" in done.stdout
    again = gpupool(pool, "notebook", "resume", "work", "--wait")
    assert (again.returncode, again.stdout) == (0, pool.lab("4") + "\n")
    refused = gpupool(pool, "notebook", "resume", "work")
    assert refused.returncode == 2 and "notebook 4 is not suspended" in refused.stderr
    unsure = gpupool(pool, "notebook", "delete", "work")
    assert unsure.returncode == 2 and "add --yes to confirm" in unsure.stderr
    assert pool.views["4"]["phase"] == "running"
    gone = gpupool(pool, "notebook", "delete", "work", "--yes", "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout)["phase"] == "cancelled"
    assert gpupool(pool, "notebook", "suspend", "nothing").returncode == 1


# --- gpupool submit of a kind: notebook file ----------------------------------------------

def test_a_yaml_notebook_passes_kind_and_idle_timeout(tmp_path: Path) -> None:
    path = tmp_path / "nb.yaml"
    path.write_text("kind: notebook\nname: course\ngpus: 0.125\nidle_timeout: 20m\n")
    spec = jobs_cmd.load_spec(path)
    assert spec.kind is Kind.NOTEBOOK and spec.idle_timeout_s == 1200
    assert spec.workdir is None and spec.command == []  # its directory is the server's
    path.write_text("kind: notebook\nidle_timeout_s: 90\n")
    assert jobs_cmd.load_spec(path).idle_timeout_s == 90


@pytest.mark.parametrize("text, message", [
    ("kind: notebook\nidle_timeout: soon\n", "field 'idle_timeout': 'soon' is not a duration"),
    ("kind: notebook\nidle_timeout: 1s\n", "field 'idle_timeout': input should be greater"),
    ("kind: notebook\nidle_timeout: 1m\nidle_timeout_s: 60\n",
     "give idle_timeout or idle_timeout_s, not both"),
    ("command: [x]\nidle_timeout: 30m\n", "idle_timeout_s: only for notebooks"),
    ("kind: notebook\ncommand: [x]\n", "a notebook runs JupyterLab; leave command out"),
    ("kind: vm\ncommand: [x]\n", "field 'kind'"),
    ("command: [x]\ntime_limit: 0\n", "field 'time_limit': input should be greater than 0"),
])
def test_a_bad_yaml_notebook_names_the_field(tmp_path: Path, text: str, message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(typer.Exit) as caught:
        jobs_cmd.load_spec(path)
    assert caught.value.exit_code == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_submit_wait_of_a_notebook_prints_its_url(pool: FakePool, tmp_path: Path) -> None:
    path = tmp_path / "nb.yaml"
    path.write_text("kind: notebook\nname: from-file\nidle_timeout: 1h\n")
    done = gpupool(pool, "submit", str(path), "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"1\n{pool.lab('1')}\n"
    assert pool.posted[0] == {"kind": "notebook", "name": "from-file", "idle_timeout_s": 3600}


# --- ps and describe ----------------------------------------------------------------------

def test_ps_has_a_kind_column(pool: FakePool) -> None:
    pool.add("1", name="train", kind="job")
    pool.add("2", name="lab")
    pool.add("3", name="nap", phase="suspended")
    done = gpupool(pool, "ps")
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:5] for line in done.stdout.splitlines()]
    assert rows == [["ID", "NAME", "KIND", "QUEUE", "PHASE"],
                    ["2", "lab", "notebook", "default", "running"],
                    ["1", "train", "job", "default", "running"]]
    suspended = gpupool(pool, "ps", "--phase", "suspended")
    assert suspended.returncode == 0 and "nap" in suspended.stdout
    shown = json.loads(gpupool(pool, "ps", "--all", "--json").stdout)
    assert [(v["kind"], v["url"]) for v in shown] == [
        ("notebook", None), ("notebook", pool.lab("2")), ("job", None)]


def test_the_fast_table_draws_notebook_rows_as_the_rich_table() -> None:
    views = [JobView.model_validate(job_json(str(i), name=f"n{i}", phase=phase, kind=kind))
             for i, (phase, kind) in enumerate([("running", "notebook"), ("suspended",
                                                "notebook"), ("pending", "job")], 1)]
    rows = [view_row(v, NOW) for v in views]
    assert [r.kind for r in rows] == ["notebook", "notebook", "job"]
    sent = [json.loads(v.model_dump_json()) for v in views]
    assert [json_row(o, NOW) for o in sent] == rows
    for width in (80, 120, 200):
        for terminal_on in (False, True):
            fast = Console(file=io.StringIO(), width=width, force_terminal=terminal_on)
            slow = Console(file=io.StringIO(), width=width, force_terminal=terminal_on)
            ps_table.print_jobs(fast, rows, "none")
            jobs_render.print_table(slow, jobs_render.rows_table(rows), "none")
            assert fast.file.getvalue() == slow.file.getvalue()  # type: ignore[attr-defined]
        assert ps_table.lay_out(rows, width) is not None


def test_a_row_without_kind_is_a_job_and_an_unknown_kind_is_refused() -> None:
    old = job_json("1", kind="job")
    del old["kind"]
    assert json_row(old, NOW).kind == "job"
    with pytest.raises(ValueError, match="kind: unknown kind 'vm'"):
        json_row(job_json("1") | {"kind": "vm"}, NOW)
    assert tuple(k.value for k in Kind) == KINDS


def test_describe_shows_a_notebooks_url_and_idle_time(pool: FakePool) -> None:
    since = datetime.now(UTC) - timedelta(minutes=3)
    pool.add("5", name="lab", idle_since=since.isoformat())
    done = gpupool(pool, "describe", "lab")
    assert done.returncode == 0, done.stderr
    lines = {line.split("  ")[0]: " ".join(line.split()) for line in done.stdout.splitlines()}
    assert lines["notebook"].startswith("notebook 5 · lab")
    assert lines["url"] == f"url {pool.lab('5')}"
    assert lines["idle"].endswith("(3m); suspended after 30m idle")
    assert lines["idle timeout"] == "idle timeout 30m"
    assert lines["command"] == "command JupyterLab (started by the server)"
    assert "restart" not in lines
    shown = json.loads(gpupool(pool, "describe", "lab", "--json").stdout)
    assert shown["kind"] == "notebook" and shown["url"] == pool.lab("5")
    assert shown["idle_since"] is not None
    pool.add("6", name="nap", phase="suspended", spec={"kind": "notebook"})
    text = " ".join(gpupool(pool, "describe", "6").stdout.split())
    assert "url none while suspended (gpupool notebook resume nap)" in text
    assert "idle timeout the server's default" in text
    pool.add("7", name="train", kind="job")
    assert gpupool(pool, "describe", "7").stdout.startswith("job ")


# --- gpupool shell ------------------------------------------------------------------------

def test_shell_with_piped_input_runs_it_and_ends(pool: FakePool) -> None:
    pool.add("3", name="lab")
    done = gpupool(pool, "shell", "lab", input="echo hi; exit\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "$ echo hi; exit\nhi\n"  # the pty's CR LF as LF: not a terminal
    assert pool.auth == ["Bearer gp_ada", "Bearer gp_ada"]  # the REST call, the WebSocket
    assert pool.messages == [["stdin", "echo hi; exit\n"]]
    assert pool.deleted == pool.terminals == ["3/1"]


def test_shell_sends_ctrl_d_once_the_input_ends(pool: FakePool) -> None:
    pool.add("3", name="lab")
    done = gpupool(pool, "shell", "3", input="echo a\necho b")  # no newline at the end
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["$ echo a", "a", "$ echo b", "b", "$ exit"]
    assert pool.messages[-1] == ["stdin", "\n\x04"]


def test_shell_says_why_it_cannot_start(pool: FakePool) -> None:
    pool.add("3", name="lab")
    pool.add("4", name="nap", phase="suspended")
    asleep = gpupool(pool, "shell", "nap", input="")
    assert asleep.returncode == 1 and "gpupool notebook resume nap" in asleep.stderr
    pool.refuse_terminals = 403
    refused = gpupool(pool, "shell", "lab", input="")
    assert refused.returncode == 2
    assert f"the gateway at {pool.url}/nb/3/ would not open a terminal: HTTP 403: not your " \
           "notebook" in " ".join(refused.stderr.split())


class FakeConnection:
    """A terminal's WebSocket as ``terminal.Session`` uses it: sent messages are kept;
    iterating waits until ``close``."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self.closed = threading.Event()

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def close(self) -> None:
        self.closed.set()

    def __iter__(self) -> Iterator[str]:
        self.closed.wait(30)
        yield from ()


def test_a_terminal_is_raw_while_joined_and_restored_after() -> None:
    import pty

    leader, follower = pty.openpty()
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, leader)
        stack.callback(os.close, follower)
        before = termios.tcgetattr(follower)
        connection = FakeConnection()
        session = terminal.Session(connection, lambda text: None).start()
        seen: list[Any] = []

        def type_then_end() -> None:
            deadline = time.monotonic() + 30
            while termios.tcgetattr(follower)[3] & termios.ICANON:  # until it is raw
                assert time.monotonic() < deadline
                time.sleep(0.01)
            seen.append(termios.tcgetattr(follower))
            os.write(leader, b"ls\x03")  # Ctrl-C goes through as a character in raw mode
            while ["stdin", "ls\x03"] not in connection.sent and time.monotonic() < deadline:
                time.sleep(0.01)
            connection.close()

        typist = threading.Thread(target=type_then_end)
        typist.start()
        terminal.interactive(session, follower)
        typist.join()
        assert connection.sent[0] == ["set_size", *terminal.size(follower)]
        assert ["stdin", "ls\x03"] in connection.sent
        assert not seen[0][3] & (termios.ECHO | termios.ISIG)  # raw meanwhile
        assert termios.tcgetattr(follower) == before  # restored


def test_notebook_and_shell_help_import_nothing_heavy(tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    wrapper = ("import atexit, json, sys\n"
               "out = sys.argv.pop(1)\n"
               "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
               "sys.argv[0] = 'gpupool'\n"
               "from gpupool.cli.main import app\n"
               "app()\n")
    heavy = ("gpupool.server", "gpupool.sim", "numpy", "sqlalchemy", "fastapi", "websockets")
    for args in (["notebook", "--help"], ["shell", "--help"], ["notebook", "open", "--help"]):
        done = subprocess.run([sys.executable, "-c", wrapper, str(out), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        modules = json.loads(out.read_text())
        assert [m for m in modules if m.split(".")[0] in heavy or any(
            m.startswith(h + ".") or m == h for h in heavy)] == [], args
