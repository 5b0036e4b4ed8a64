"""The fast `gpupool ps` (issue 15, item 6). Behaviour, not timings (bench/cli_bench.py has
those): the table drawn from the server's JSON by cli/ps_table.py is, character for
character and colour for colour, the rich Table the validated JobViews gave; the rows of a
JSON object are those of its JobView; `ps` imports neither pydantic, the schemas nor rich's
Table; the raw client asks and fails as Client does; options parsed without pydantic are
the values (and errors) Typer's own parsing gives."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from gpupool.cli import jobs_render, lazy, ps_cmd, ps_table
from gpupool.cli.job_cells import JobRow, json_row, view_row
from gpupool.cli.lean import lean_options
from gpupool.schemas.jobs import JobOrder, JobSpec, JobView, Phase, Placement, RankPlacement
from gpupool.sdk import ApiError, Client, RawClient, ServerConfig, _paging, _plain
from server_harness import Server, free_port, make_server

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = ServerConfig("http://gp.test", "gp_secret")


# --- the table: ps_table against the rich Table ------------------------------------------

def consoles(width: int) -> Iterator[Console]:
    """Piped (no colour) and three kinds of terminal, ``width`` columns."""
    yield Console(file=io.StringIO(), width=width, highlight=False)
    for colours in ("standard", "256", "truecolor"):
        yield Console(file=io.StringIO(), width=width, highlight=False, force_terminal=True,
                      color_system=colours)  # type: ignore[arg-type]


def rich_output(console: Console, rows: list[JobRow], wide: bool = False) -> str:
    jobs_render.print_table(console, jobs_render.rows_table(rows, wide), "nothing")
    return console.file.getvalue()  # type: ignore[attr-defined]


def fast_output(console: Console, rows: list[JobRow], wide: bool = False) -> str:
    ps_table.print_jobs(console, rows, "nothing", wide=wide)
    return console.file.getvalue()  # type: ignore[attr-defined]


def fresh(console: Console) -> Console:
    return Console(file=io.StringIO(), width=console.width, highlight=False,
                   force_terminal=console.is_terminal,
                   color_system=console.color_system)  # type: ignore[arg-type]


TEXTS = [
    "", "x", "train", "a-much-longer-job-name-than-24-chars", "queue parked would exceed its "
    "quota: it uses 0 of 0 GPUs and asks 1 more than its borrow limit", "[bold]not markup[/]",
    "back\\slash\\", "[red]", "a\\[b]c", "ends with \\", "gpu:0:1", ":smile: face", "x:y",
    "zürich", "日本語の名前", "tab\there", "two  spaces", " lead", "trail ", "…", "50%",
    "exit code 3", "waiting for 2 GPUs on one node",
]


def random_row(rng: random.Random) -> JobRow:
    def text(limit: int) -> str:
        return rng.choice(TEXTS)[:limit] if rng.random() < 0.6 else "".join(
            rng.choice("abcdefghij -_.:[]\\/0123456789") for _ in range(rng.randrange(0, limit)))

    return JobRow(str(rng.randrange(1, 10 ** rng.randrange(1, 7))), text(24), text(12),
                  rng.choice([p.value for p in Phase]), rng.choice(["-", "1", "0.5", "20GiB",
                                                                     "1/20GiB A100", "8"]),
                  rng.choice(["", "n1:0", "node-a:0,1,2,3", "gpu-host+3", text(20)]),
                  rng.choice(["0s", "59s", "12m", "3h", "400d"]), text(120))


@pytest.mark.parametrize("seed", range(4))  # each seed: ~30 widths × 3 consoles (time)
def test_the_fast_table_is_the_rich_table_at_every_width(seed: int) -> None:
    rng = random.Random(seed)
    rows = [random_row(rng) for _ in range(rng.randrange(1, 8))]
    for width in (*range(8 + seed % 5, 140, 5), 200, 250):
        for console in consoles(width):
            assert fast_output(console, rows) == rich_output(fresh(console), rows), (width, rows)
            other = fresh(console)
            assert fast_output(other, rows, wide=True) == rich_output(fresh(console), rows, True)


def test_the_usual_tables_are_drawn_by_the_fast_path_wide_or_narrow() -> None:
    """The comparison above covers the fast path, not only the rich fallback: ASCII rows are
    laid out by ps_table at a terminal's 80 columns (reasons cut) and piped (200)."""
    rows = [JobRow(str(i), "train", "parked", "pending", "1", "", "5m",
                   "queue parked would exceed its quota: it uses 0 of 0 GPUs") for i in range(99)]
    for width in (80, 120, 200):
        assert ps_table.lay_out(rows, width) is not None
        for console in consoles(width):
            assert fast_output(console, rows) == rich_output(fresh(console), rows)
    assert ps_table.lay_out([rows[0]._replace(name="日本")], 200) is None  # rich draws it


def test_no_rows_says_so_as_before() -> None:
    for console in consoles(80):
        assert fast_output(console, []) == rich_output(fresh(console), [])


# --- the rows: from JSON as from the JobView ---------------------------------------------

def random_view(rng: random.Random) -> JobView:
    phase = rng.choice(list(Phase))
    spec: dict[str, Any] = {"command": ["python", "train.py"]}
    spec["gpus"] = rng.choice([0, 0.25, 0.5, 1, 2, 8])
    if spec["gpus"] <= 1 and rng.random() < 0.4:
        spec["gpu_memory"] = rng.choice([512, 20480, 81920])
    if rng.random() < 0.3:
        spec["gpu_model"] = rng.choice(["A100", "H100-SXM5-80GB"])
    placement = None
    if phase in (Phase.STARTING, Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED):
        ranks = [RankPlacement(node=f"n{i}", gpus=[0, 1]) for i in range(rng.choice([0, 0, 3]))]
        placement = Placement(node="n0", gpus=rng.choice([[], [0], [2, 3]]), ranks=ranks)
    created = NOW - timedelta(seconds=rng.choice([0, 5, 59, 61, 3599, 7200, 90000, 10 ** 7]),
                              microseconds=rng.randrange(10 ** 6))
    return JobView(
        id=str(rng.randrange(1, 10 ** 6)), name=rng.choice(TEXTS[1:4]) or "job", team="t",
        user="u", queue=rng.choice(["default", "parked"]), phase=phase, priority=0,
        spec=JobSpec.model_validate(spec),
        reason=rng.choice(["", phase.value, "waiting for 2 GPUs", "x " * 40]),
        placement=placement, exit_code=rng.choice([None, 0, 3, -9]),
        created_at=created if rng.random() < 0.8 else created.replace(tzinfo=None),
    )


@pytest.mark.parametrize("seed", range(10))
def test_a_json_object_gives_the_row_of_its_jobview(seed: int) -> None:
    rng = random.Random(seed)
    views = [random_view(rng) for _ in range(30)]
    sent = json.loads(json.dumps([v.model_dump(mode="json") for v in views]))  # as served
    for view, obj in zip(views, sent, strict=True):
        assert json_row(obj, NOW) == view_row(view, NOW), obj
    rows = [view_row(v, NOW) for v in views]
    for console in consoles(200):
        reference = fresh(console)
        jobs_render.print_table(reference, jobs_render.jobs_table(views, NOW), "nothing")
        assert fast_output(console, ps_cmd.table_rows(sent, NOW)) == (
            reference.file.getvalue())  # type: ignore[attr-defined]
        assert rich_output(fresh(console), rows) == reference.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("broken", [
    {"phase": "paused"}, {"created_at": 5}, {"spec": None}, {"spec": {"gpus": "1"}},
    {"placement": {"gpus": []}},
])
def test_an_answer_without_what_the_table_shows_is_an_api_error(broken: dict[str, Any]) -> None:
    good = random_view(random.Random(1)).model_dump(mode="json")
    with pytest.raises(ApiError, match=r"unexpected answer from the server to GET "
                       r"/api/v1/jobs: .* \(are the client and the server the same"):
        ps_cmd.table_rows([good, good | broken], NOW)
    with pytest.raises(ApiError, match="id: missing"):
        ps_cmd.table_rows([{k: v for k, v in good.items() if k != "id"}], NOW)


def test_the_copied_phases_and_orders_are_the_schemas() -> None:
    assert ", ".join(p.value for p in Phase) == ps_cmd.PHASES
    assert ", ".join(o.value for o in JobOrder) == ps_cmd.ORDERS
    assert (Phase.PENDING, Phase.STARTING, Phase.RUNNING) == ps_cmd.ACTIVE
    assert JobOrder.NEWEST.value == ps_cmd.NEWEST


# --- the raw client: the same requests and errors as Client ------------------------------

def pages(request: httpx.Request) -> httpx.Response:
    after = int(request.url.params.get("cursor") or 100)
    size = int(request.url.params["limit"])
    ids = list(range(after - 1, max(0, after - 1 - size), -1))
    rows = [random_view(random.Random(i)).model_dump(mode="json") | {"id": str(i)}
            for i in ids]
    headers = {"X-Next-Cursor": str(ids[-1])} if ids and ids[-1] > 1 else {}
    return httpx.Response(200, json=rows, headers=headers)


@pytest.mark.parametrize("args", [
    {}, {"phase": "running", "queue": "vision"}, {"phase": ["pending", "running"],
                                                  "order": "queue", "limit": 7},
    {"name": "train", "limit": 1}, {"limit": 1500}, {"limit": 250},
])
def test_the_raw_client_asks_and_answers_as_client(args: dict[str, Any]) -> None:
    seen: dict[str, list[str]] = {"model": [], "raw": []}

    def recorder(kind: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            seen[kind].append(str(request.url))
            assert request.headers["authorization"] == "Bearer gp_secret"
            return pages(request)
        return httpx.MockTransport(handle)

    with Client(config=CONFIG, transport=recorder("model")) as gp:
        views = gp.jobs(**args)
    with RawClient(config=CONFIG, transport=recorder("raw")) as raw:
        objects = raw.jobs(**args)
    assert seen["raw"] == seen["model"]
    assert objects == [v.model_dump(mode="json") for v in views]


@pytest.mark.parametrize("status, body, kind", [
    (404, {"detail": "no such queue"}, "detail"),
    (422, {"detail": [{"loc": ["query", "phase", 0], "msg": "bad phase"}]}, "list"),
    (500, "Internal Server Error", "text"),
    (200, {"not": "a list"}, "shape"),
    (200, "not json at all {", "json"),
])
def test_the_raw_client_fails_as_client(status: int, body: Any, kind: str) -> None:
    def handle(_request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    errors = []
    for cls in (Client, RawClient):
        with cls(config=CONFIG, transport=httpx.MockTransport(handle)) as client:
            with pytest.raises(ApiError) as caught:
                client.jobs()
            errors.append(caught.value)
    model, raw = errors
    assert raw.status == model.status
    if kind == "shape":  # pydantic words it its own way; both say the same thing around it
        assert raw.message.startswith("unexpected answer from the server to GET /api/v1/jobs")
        assert model.message.startswith("unexpected answer from the server to GET /api/v1/jobs")
    else:
        assert raw.message == model.message


def test_the_raw_client_says_when_no_server_answers_as_client() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    messages = []
    for cls in (Client, RawClient):
        with cls(config=CONFIG, transport=httpx.MockTransport(refuse)) as client:
            with pytest.raises(ApiError) as caught:
                client.jobs()
            messages.append((caught.value.status, caught.value.message))
    assert messages[0] == messages[1]
    assert messages[0][0] == 0 and "Connection refused" in messages[0][1]


# --- options parsed without pydantic ------------------------------------------------------

def echo_app() -> typer.Typer:
    """A command with the kinds of options `ps` has, in the group class of `gpupool`."""
    app = typer.Typer(add_completion=False, rich_markup_mode=None, cls=lazy.lazy_group({}))

    @app.callback()
    def group() -> None:
        """(group)"""

    @app.command()
    def cmd(
        name: Annotated[str | None, typer.Option()] = None,
        label: Annotated[str, typer.Option()] = "newest",
        count: Annotated[int, typer.Option("--count", "-n", min=0)] = 200,
        top: Annotated[int, typer.Option(max=5)] = 1,
        flag: Annotated[bool, typer.Option("--flag")] = False,
    ) -> None:
        """(cmd)"""
        typer.echo(repr((name, label, count, top, flag)))

    return app


ARGVS = [
    ["cmd"], ["cmd", "--name", "x"], ["cmd", "--name", ""], ["cmd", "--label", "a b"],
    ["cmd", "-n", "0"], ["cmd", "-n", "007"], ["cmd", "--count", "12345678901234567890"],
    ["cmd", "-n", "-1"], ["cmd", "-n", "abc"], ["cmd", "-n", "1.5"], ["cmd", "-n", " 3"],
    ["cmd", "-n", "٣"], ["cmd", "-n", "1_000"], ["cmd", "--top", "5"], ["cmd", "--top", "6"],
    ["cmd", "--flag"], ["cmd", "--help"], ["--help"], ["cmd", "--name"], ["cmd", "-n", "+4"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_options_parsed_without_pydantic_are_typers_values_and_errors(
    argv: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    lean = runner.invoke(echo_app(), argv)
    monkeypatch.setattr(lazy, "lean_options", lambda command, ctx=None: command)
    plain = runner.invoke(echo_app(), argv)
    assert (lean.exit_code, lean.output) == (plain.exit_code, plain.output)
    if argv == ["cmd", "-n", "007"]:
        assert lean.output == "(None, 'newest', 7, 1, False)\n"


def test_lean_options_leave_other_options_to_typer() -> None:
    app = typer.Typer(add_completion=False)

    @app.command()
    def cmd(path: Annotated[Path, typer.Option()] = Path("."),
            many: Annotated[list[str] | None, typer.Option()] = None,
            clamped: Annotated[int, typer.Option(min=0, max=3, clamp=True)] = 0) -> None:
        """(cmd)"""

    command = lean_options(typer.main.get_command(app))
    assert all(getattr(p, "_runtime_param", None) is None for p in command.params)


def test_ps_rejects_bad_options_as_before() -> None:
    runner = CliRunner()
    from gpupool.cli.main import app

    env = {"GPUPOOL_URL": "http://127.0.0.1:9", "GPUPOOL_TOKEN": "x"}
    for argv, code, text in [
        (["ps", "--limit", "-1"], 2, "--limit"), (["ps", "-n", "x"], 2, "-n"),
        (["ps", "--phase", "paused"], 2, "choose one of pending"),
        (["ps", "--order", "oldest"], 2, "choose one of newest"),
        (["ps"], 3, "cannot reach the gpupool server at http://127.0.0.1:9"),
        (["ps", "--json"], 3, "cannot reach the gpupool server at http://127.0.0.1:9"),
    ]:
        result = runner.invoke(app, argv, env=env)
        assert result.exit_code == code, (argv, result.output)
        assert text in result.output, (argv, result.output)


# --- against a real server -----------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("psfast"), "1xA100-80GB")


class FixedClock(datetime):
    """``datetime`` whose now() is NOW: the AGE column does not tick between two tables."""

    @classmethod
    def now(cls, tz: Any = None) -> FixedClock:
        return cls.fromtimestamp(NOW.timestamp(), tz)


def test_ps_prints_what_the_jobview_table_printed(
    server: Server, monkeypatch: pytest.MonkeyPatch,
) -> None:
    specs = [{"command": ["sleep", "60"], "gpus": 1, "name": "two"},  # runs
             {"command": ["true"], "gpus": 0.5, "name": "waits"},  # waits for the GPU
             {"command": ["true"], "name": "one"},  # succeeds
             {"command": ["false"], "gpu_memory": "20GiB", "name": "three"}]  # waits too
    with server.client() as c:
        for spec in specs:
            assert c.post("/jobs", json=spec).status_code == 201, spec
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = {j["name"]: j["phase"] for j in c.get("/jobs").json()}
            if now.get("two") == "running" and now.get("one") == "succeeded":
                break
            time.sleep(0.2)
        assert now["two"] == "running" and now["one"] == "succeeded", now
    monkeypatch.setattr(ps_cmd, "datetime", FixedClock)
    runner = CliRunner()
    from gpupool.cli.main import app

    def views(argv: list[str]) -> list[JobView]:
        limit = int(argv[argv.index("-n") + 1]) if "-n" in argv else 200
        phases = None if "--all" in argv else ["pending", "starting", "running"]
        with Client(server.url, server.token) as gp:
            return gp.jobs(phases, order="queue" if "queue" in argv else "newest", limit=limit)

    for argv in (["ps", "--all"], ["ps", "-n", "2", "--all"], ["ps"], ["ps", "--order", "queue"]):
        for _ in range(20):  # a pending job's reason may change between two requests: again
            before = views(argv)
            result = runner.invoke(app, [*argv, "--url", server.url, "--token", server.token])
            as_json = runner.invoke(app, [*argv, "--json", "--url", server.url,
                                          "--token", server.token])
            if views(argv) == before:
                break
        assert result.exit_code == 0, result.output
        console = Console(file=io.StringIO(), width=200, highlight=False)
        jobs_render.print_table(console, jobs_render.jobs_table(before, NOW), "x")
        assert result.stdout == console.file.getvalue(), argv  # type: ignore[attr-defined]
        assert json.loads(as_json.stdout) == [v.model_dump(mode="json") for v in before]


def test_ps_imports_neither_pydantic_the_schemas_nor_richs_table(
    tmp_path: Path, server: Server,
) -> None:
    out = tmp_path / "modules.json"
    wrapper = ("import atexit, json, sys\n"
               "out = sys.argv.pop(1)\n"
               "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
               "sys.argv[0] = 'gpupool'\n"
               "from gpupool.cli.main import app\n"
               "app()\n")
    done = subprocess.run([sys.executable, "-c", wrapper, str(out), "ps", "--all"],
                          env={**os.environ, **server.env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ID" in done.stdout
    modules = set(json.loads(out.read_text()))
    heavy = ("pydantic", "pydantic_core", "gpupool.schemas", "rich.table", "gpupool.sdk.client")
    assert sorted(m for m in modules if m.split(".")[0] in heavy or any(
        m == h or m.startswith(h + ".") for h in heavy)) == []


# --- the raw client over the standard library (sdk/_plain.py) -----------------------------

@pytest.mark.parametrize("url, env, ok", [
    ("http://127.0.0.1:8080", {}, True),
    ("http://gp.example/prefix", {}, True),
    ("http://[::1]:9000", {}, True),
    ("https://127.0.0.1:8080", {}, False),
    ("http://user:pw@127.0.0.1:8080", {}, False),
    ("http://127.0.0.1:8080?x=1", {}, False),
    ("http://127.0.0.1:99999", {}, False),
    ("http://127.0.0.1:8080", {"HTTP_PROXY": "http://proxy:3128"}, False),
    ("http://127.0.0.1:8080", {"all_proxy": "socks5://proxy"}, False),
    ("http://127.0.0.1:8080", {"HTTPS_PROXY": "http://proxy:3128"}, False),
])
def test_the_standard_library_is_used_only_where_httpx_would_do_the_same(
    url: str, env: dict[str, str], ok: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _plain.usable(url) is ok
    monkeypatch.setattr(sys, "platform", "darwin")  # urllib reads system proxies there
    assert _plain.usable(url) is False


def httpx_only(server_url: str, token: str, **kwargs: Any) -> RawClient:
    """A RawClient that sends everything through httpx (a transport given: no fast path)."""
    return RawClient(server_url, token, transport=httpx.HTTPTransport(), **kwargs)


def test_the_plain_path_pages_as_httpx_does(server: Server,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with server.client() as c:
        for i in range(5):
            assert c.post("/jobs", json={"command": ["true"], "name": f"p{i}"}).status_code == 201
    monkeypatch.setattr(_paging, "PAGE_MAX", 2)  # several pages on one kept-alive connection
    for args in ({}, {"limit": 3}, {"phase": ["pending", "succeeded"], "order": "queue"},
                 {"name": "p3"}):
        for _ in range(20):  # jobs move on between two requests: again until they did not
            with httpx_only(server.url, server.token) as slow:
                before = slow.jobs(**args)
            with RawClient(server.url, server.token) as fast:
                assert fast._plain is not None
                got = fast.jobs(**args)
                assert fast._http is None  # httpx never needed
            with Client(server.url, server.token) as gp:
                views = gp.jobs(**args)
            if [v.model_dump(mode="json") for v in views] == before:
                break
        assert got == before, args
        assert got == [v.model_dump(mode="json") for v in views]


def test_the_plain_path_fails_as_httpx_does(server: Server, tmp_path: Path) -> None:
    def failure(client: RawClient, **args: Any) -> tuple[int, str]:
        with client, pytest.raises(ApiError) as caught:
            client.jobs(**args)
        return caught.value.status, caught.value.message

    cases: list[tuple[str, str, dict[str, Any]]] = [
        (server.url, "not-a-token", {}),  # 401
        (server.url, server.token, {"phase": "paused"}),  # 422
        (server.url, server.token, {"order": "oldest"}),  # 422
        (f"http://127.0.0.1:{free_port()}", server.token, {}),  # nothing listens
        (f"{server.url}/nowhere", server.token, {}),  # 404
    ]
    for url, token, args in cases:
        fast = failure(RawClient(url, token), **args)
        assert fast == failure(httpx_only(url, token), **args), (url, args)


def test_a_server_that_does_not_answer_times_out_once_as_with_httpx() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        messages = []
        for client in (RawClient(url, "t", timeout=0.3), httpx_only(url, "t", timeout=0.3)):
            t0 = time.monotonic()
            with client, pytest.raises(ApiError) as caught:
                client.jobs()
            messages.append((caught.value.status, caught.value.message))
            assert time.monotonic() - t0 < 5
    assert messages[0] == messages[1] == (
        0, f"the gpupool server at {url} did not answer within 0.3 s")


def test_answers_the_plain_path_does_not_read_go_to_httpx() -> None:
    """What the plain path reads itself (HTTP/1.1 or 1.0, a Content-Length body, a closing
    connection) and what it leaves to httpx (gzip, chunked, not JSON, an error): the same
    rows or the same ApiError as through httpx alone."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    rows = [{"id": "1", "name": "x"}]
    data = json.dumps(rows).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    zipped = gzip.compress(data)

    def sized(body: bytes, **headers: str) -> dict[str, str]:
        return {"Content-Length": str(len(body)), **headers}

    error = b'{"detail": "invalid API token"}'
    answers: dict[str, tuple[int, dict[str, str], bytes, str]] = {
        "/ok": (200, sized(data), data, "HTTP/1.1"),
        "/old": (200, sized(data), data, "HTTP/1.0"),
        "/close": (200, sized(data, Connection="close"), data, "HTTP/1.1"),
        "/gz": (200, sized(zipped, **{"Content-Encoding": "gzip"}), zipped, "HTTP/1.1"),
        "/chunked": (200, {"Transfer-Encoding": "chunked"}, chunked, "HTTP/1.1"),
        "/text": (200, sized(b"not json!"), b"not json!", "HTTP/1.1"),
        "/err": (500, sized(b"Internal Server Error"), b"Internal Server Error", "HTTP/1.1"),
        "/gone": (401, sized(error), error, "HTTP/1.1"),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, headers, body, version = answers[self.path.split("/api/")[0]]
            self.protocol_version = version
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        for prefix in answers:
            results = []
            for client in (RawClient(base + prefix, "t"), httpx_only(base + prefix, "t")):
                with client:
                    try:
                        results.append(client.jobs() + client.jobs())  # twice: kept alive?
                    except ApiError as exc:
                        results.append([exc.status, exc.message])
                    if client._plain is not None and prefix in ("/ok", "/old", "/close"):
                        assert client._http is None, prefix  # read without httpx
            assert results[0] == results[1], prefix
            assert results[0] == rows + rows or prefix in ("/text", "/err", "/gone"), prefix
    finally:
        httpd.shutdown()
        httpd.server_close()
