"""Tenant administration (SQLite and PostgreSQL): token expiry, listing and revocation,
disabled and deleted users (with the Unix accounts a root server makes for them), team
deletion, and the audit log. Token and user commands go through the real CLI. Revocation and
disabling must bite on the very next request: no sleeping for the server's token cache.

Tiers. In-process, over HTTP (``inproc_http.served``: the real app, controller and database of
``inprocess_api.InProcessServer``, served by uvicorn from a thread on 127.0.0.1; a scripted
executor, the loop stepped by the test): every test but one. Their CLI commands run in this
process against that URL (``Served.cli``: the same commands, exit codes, stdout and stderr;
`gpupool` as its own process is tested in test_cli_fast.py and test_cli_e2e.py); where a real
server's loop was waited for (a job running, cancelled) the test steps the loop
(``settle``). The refusals of the audit log are coalesced per address for 10 s in a table of
the process (``services/audit.py``), so the audit test clears it, as its own server did.
A real `gpupool up`: ``test_disabled_user_is_refused_and_their_job_runs_until_cancelled``,
which watches a real job process's log keep growing after its user was disabled.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from db_backends import database
from gpupool.executors import accounts
from gpupool.server.services import audit as audit_service
from inproc_http import Served, served
from inprocess_api import InProcessServer
from server_harness import Server, backend_params, make_server, submit, wait_for

PY = sys.executable
ROOT = os.geteuid() == 0
# Prints a line every 50 ms until stopped: its log keeps growing while it runs.
TICKER = (
    "import time\n"
    "i = 0\n"
    "while True:\n"
    "    print('tick', i, flush=True); i += 1; time.sleep(0.05)\n"
)


@pytest.fixture(scope="module", params=backend_params())
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # One server per store for the module: the tests leave it as they found it (their jobs
    # ended, their users deleted).
    yield from _served(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module", params=backend_params())
def real_server(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server(request.param, tmp_path_factory.mktemp("real-" + request.param),
                           "1xA100-80GB")


@pytest.fixture(params=backend_params())
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A server of the test's own: refusals are coalesced per address for 10 s, so the
    audit test must not see the refusals of the tests before it (the table of them is the
    process's: cleared)."""
    audit_service._recent.clear()
    yield from _served(request.param, tmp_path)


def _served(backend: str, tmp_path: Path) -> Iterator[Served]:
    for db in database(backend, tmp_path):
        with served(InProcessServer(tmp_path, nodes=1, cards=1, db=db)) as s:
            yield s


@pytest.fixture
def names(server: Served) -> Iterator[list[str]]:
    """Unique user names for one test; whatever a test leaves (it deletes its users itself
    when it passes) is deleted afterwards, jobs cancelled first, so that the Unix accounts
    a root server makes do not pile up."""
    made: list[str] = []
    yield made
    _delete_users(server, made)


@pytest.fixture
def real_names(real_server: Server) -> Iterator[list[str]]:
    """``names``, of the real server."""
    made: list[str] = []
    yield made
    _delete_users(real_server, made)


def _delete_users(server: Server | Served, made: list[str]) -> None:
    with server.client() as admin:
        live = {u["name"] for u in admin.get("/users").json()}
        for name in made:
            if name not in live:
                continue
            for job in admin.get("/jobs", params={"all_teams": "true"}).json():
                if job["user"] == name and job["phase"] in ("pending", "starting", "running"):
                    admin.post(f"/jobs/{job['id']}/cancel")
            with contextlib.suppress(AssertionError):
                wait_for(lambda n=name: _deleted(server, admin, n), 30)
            if ROOT:  # the server could not do it: do not leave the account behind
                with contextlib.suppress(accounts.AccountError):
                    accounts.remove(accounts.derived_name(name), name)


def _deleted(server: Server | Served, admin: httpx.Client, name: str) -> bool:
    if isinstance(server, Served):
        server.step(1.0)  # what a real server's loop does meanwhile: the cancelled jobs end
    return admin.delete(f"/users/{name}").status_code == 200


def unique(names: list[str], prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    names.append(name)
    return name


def gpupool(server: Server | Served, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as the admin (GPUPOOL_URL / GPUPOOL_TOKEN of the harness): in this
    process for an in-process server, else as its own process."""
    if isinstance(server, Served):
        return server.cli(*args)
    return subprocess.run(
        [PY, "-m", "gpupool.cli.main", *args],
        env=server.env, capture_output=True, text=True, timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def make_user(server: Server | Served, admin: httpx.Client, name: str,
              team: str = "default") -> str:
    """A user in ``team`` and a token of theirs (through the API)."""
    response = admin.post("/users", json={"name": name, "team": team})
    assert response.status_code == 201, response.text
    response = admin.post("/tokens", json={"user": name})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def whoami(server: Server | Served, token: str) -> httpx.Response:
    with server.client(token) as c:
        return c.get("/whoami")


def phase(admin: httpx.Client, job: str) -> str:
    return str(admin.get(f"/jobs/{job}").json()["phase"])


def settle(server: Served, admin: httpx.Client, job: str, want: str, passes: int = 5) -> None:
    """Step the loop (a second a pass) until ``job`` is in phase ``want``: what waiting for
    a real server's loop was."""
    for _ in range(passes):
        if phase(admin, job) == want:
            return
        server.step(1.0)
    assert phase(admin, job) == want


def audit(admin: httpx.Client) -> list[dict[str, str]]:
    response = admin.get("/audit", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json())


def test_token_create_list_revoke_and_expiry(server: Served, names: list[str]) -> None:
    ada = unique(names, "ada")
    ok(gpupool(server, "admin", "user", "create", ada, "--team", "default"))
    token = ok(gpupool(server, "admin", "token", "create", ada, "--expires", "30d")).strip()
    assert whoami(server, token).json()["user"] == ada  # now in the server's cache

    listed = json.loads(ok(gpupool(server, "admin", "token", "list", "--user", ada, "--json")))
    assert [t["user"] for t in listed] == [ada]
    (mine,) = listed
    assert mine["state"] == "live" and mine["last_used_at"] is not None
    days = (datetime.fromisoformat(mine["expires_at"])
            - datetime.fromisoformat(mine["created_at"])).total_seconds() / 86400
    assert round(days) == 30
    table = ok(gpupool(server, "admin", "token", "list"))
    assert all(c in table for c in ("ID", "USER", "SCOPE", "CREATED", "EXPIRES", "LAST USED"))
    assert token not in table and token not in json.dumps(listed)

    # revoked: refused on the very next request, although the token is cached
    ok(gpupool(server, "admin", "token", "revoke", str(mine["id"])))
    refused = whoami(server, token)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    again = gpupool(server, "admin", "token", "revoke", str(mine["id"]))
    assert again.returncode == 2 and "already revoked" in again.stderr
    both = gpupool(server, "admin", "token", "revoke")
    assert both.returncode == 2 and "TOKEN_ID or --user" in both.stderr
    bad = gpupool(server, "admin", "token", "create", ada, "--expires", "soon")
    assert bad.returncode == 2 and "--expires: 'soon' is not a duration" in bad.stderr

    # all of a user's tokens at once
    two = [ok(gpupool(server, "admin", "token", "create", ada)).strip() for _ in range(2)]
    assert all(whoami(server, t).status_code == 200 for t in two)
    out = ok(gpupool(server, "admin", "token", "revoke", "--user", ada))
    assert out.startswith("revoked token(s): ")
    assert [whoami(server, t).status_code for t in two] == [401, 401]
    assert ada not in ok(gpupool(server, "admin", "token", "list"))
    states = json.loads(ok(gpupool(server, "admin", "token", "list", "--user", ada, "--all",
                                   "--json")))
    assert [t["state"] for t in states] == ["revoked"] * 3

    # expiry: checked on every request, the cached ones included
    with server.client() as admin:
        created = admin.post("/tokens", json={"user": ada, "expires_in_s": 1.5}).json()
        short = created["token"]
        assert whoami(server, short).status_code == 200  # cached until it expires
        left = datetime.fromisoformat(created["expires_at"]).timestamp() - time.time()
        time.sleep(min(max(left, 0) + 0.05, 2.0))
        refused = whoami(server, short)
        assert refused.status_code == 401 and "expired" in refused.json()["detail"]
        assert admin.delete(f"/users/{ada}").status_code == 200


def test_disabled_user_is_refused_and_their_job_runs_until_cancelled(
    real_server: Server, real_names: list[str]
) -> None:
    server, names = real_server, real_names
    bob = unique(names, "bob")
    with server.client() as admin:
        token = make_user(server, admin, bob)
        with server.client(token) as c:
            job = submit(c, command=[PY, "-c", TICKER], gpus=0.5)
        wait_for(lambda: phase(admin, job) == "running")
        assert whoami(server, token).status_code == 200  # cached

        out = ok(gpupool(server, "admin", "user", "disable", bob))
        assert "left alone" in out
        refused = whoami(server, token)
        assert refused.status_code == 401 and "disabled" in refused.json()["detail"]
        users = json.loads(ok(gpupool(server, "admin", "user", "list", "--json")))
        assert next(u for u in users if u["name"] == bob)["disabled"] is True
        assert "disabled" in ok(gpupool(server, "admin", "user", "list"))
        no_token = gpupool(server, "admin", "token", "create", bob)
        assert no_token.returncode == 2 and "is disabled" in no_token.stderr

        # the job goes on: its log keeps growing after the user was disabled
        seen = len(admin.get(f"/jobs/{job}/logs").json()["data"])
        wait_for(lambda: len(admin.get(f"/jobs/{job}/logs").json()["data"]) > seen)
        assert phase(admin, job) == "running"
        refused_delete = admin.delete(f"/users/{bob}")
        assert refused_delete.status_code == 409
        assert f"{job} (running)" in refused_delete.json()["detail"]
        assert "gpupool cancel" in refused_delete.json()["detail"]
        assert admin.post(f"/jobs/{job}/cancel").status_code == 200
        wait_for(lambda: phase(admin, job) == "cancelled")

        ok(gpupool(server, "admin", "user", "enable", bob))
        assert whoami(server, token).status_code == 200
        assert admin.delete(f"/users/{bob}").status_code == 200
        assert whoami(server, token).status_code == 401


def test_team_delete_is_refused_while_in_use(server: Served, names: list[str]) -> None:
    with server.client() as admin:
        assert admin.post("/teams", json={"name": "vision", "quota_gpus": 1}).status_code == 201
        cid = unique(names, "cid")
        make_user(server, admin, cid, team="vision")
        refused = admin.delete("/teams/vision")
        assert refused.status_code == 409 and cid in refused.json()["detail"]
        assert admin.delete(f"/users/{cid}").status_code == 200

        job = submit(admin, command=[PY, "-c", TICKER], queue="vision", gpus=0.5)
        refused = admin.delete("/teams/vision")
        assert refused.status_code == 409
        assert f"team 'vision' has 1 active job(s): {job} (" in refused.json()["detail"]
        cli = gpupool(server, "admin", "team", "delete", "vision")
        assert cli.returncode == 2 and "active job" in cli.stderr
        assert admin.post(f"/jobs/{job}/cancel").status_code == 200
        settle(server, admin, job, "cancelled")

        assert ok(gpupool(server, "admin", "team", "delete", "vision")) == "team vision deleted\n"
        assert "vision" not in [t["name"] for t in admin.get("/teams").json()]
        assert admin.get(f"/jobs/{job}").json()["phase"] == "cancelled"  # history stays
        assert admin.post("/teams", json={"name": "vision"}).status_code == 201  # name free
        assert admin.delete("/teams/vision").status_code == 200
        default = admin.delete("/teams/default")
        assert default.status_code == 409 and "cannot be deleted" in default.json()["detail"]


def test_user_unix_accounts_and_delete(server: Served, names: list[str]) -> None:
    dee = unique(names, "dee")
    with server.client() as admin:
        made = admin.post("/users", json={"name": dee, "team": "default"}).json()
        if ROOT:
            assert made["unix_user"] == f"{accounts.prefix()}{dee}"
            assert pwd.getpwnam(made["unix_user"]).pw_gecos == accounts.MARKER + dee
        else:
            assert made["unix_user"] is None

        ghost = unique(names, "ghost")
        missing = f"nosuch{uuid.uuid4().hex[:6]}"
        bad = admin.post("/users", json={"name": ghost, "team": "default",
                                         "unix_user": missing})
        assert bad.status_code == 422 and missing in bad.json()["detail"]
        assert ghost not in [u["name"] for u in admin.get("/users").json()]  # no row left
        if ROOT:  # an existing account, named: shared with nobody else unless named again
            named = admin.post("/users", json={"name": ghost, "team": "default",
                                               "unix_user": made["unix_user"]})
            assert named.status_code == 201
            assert named.json()["unix_user"] == f"{accounts.prefix()}{dee}"
            assert admin.delete(f"/users/{ghost}").json()["unix_removed"] is False

        token = admin.post("/tokens", json={"user": dee}).json()["token"]
        with server.client(token) as c:
            job = submit(c, command=[PY, "-c", TICKER])
        settle(server, admin, job, "running")
        refused = admin.delete(f"/users/{dee}")
        assert refused.status_code == 409 and f"{job} (running)" in refused.json()["detail"]
        admin.post(f"/jobs/{job}/cancel")
        settle(server, admin, job, "cancelled")

        deleted = json.loads(ok(gpupool(server, "admin", "user", "delete", dee, "--json")))
        assert deleted["tokens_revoked"] == 1
        assert whoami(server, token).status_code == 401
        if ROOT:
            assert deleted["unix_removed"] is True
            with pytest.raises(KeyError):
                pwd.getpwnam(f"{accounts.prefix()}{dee}")
        assert dee not in [u["name"] for u in admin.get("/users").json()]
        assert admin.get(f"/jobs/{job}").json()["user"].startswith(dee)  # history stays
        gone = admin.post("/tokens", json={"user": dee})
        assert gone.status_code == 404
        again = admin.post("/users", json={"name": dee, "team": "default"})  # name is free
        assert again.status_code == 201, again.text
        assert admin.delete(f"/users/{dee}").status_code == 200
        me = admin.delete("/users/admin")
        assert me.status_code == 409 and "yourself" in me.json()["detail"]


def test_audit_log_records_admin_actions_and_refusals(own_server: Served) -> None:
    server, names = own_server, []
    eve = unique(names, "eve")
    with server.client() as admin:
        admin.post("/teams", json={"name": "audited"})
        token = make_user(server, admin, eve)
        assert admin.post(f"/users/{eve}/disable").status_code == 200
        assert whoami(server, token).status_code == 401  # disabled user
        assert admin.post(f"/users/{eve}/enable").status_code == 200
        assert admin.post(f"/users/{eve}/tokens/revoke").json()["revoked"]
        for _ in range(5):  # a flood from one address: coalesced
            assert whoami(server, "gp_not-a-token").status_code == 401
        with httpx.Client(base_url=server.url + "/api/v1") as anonymous:
            assert anonymous.get("/whoami").status_code == 401
        with server.client(token) as c:
            assert c.get("/jobs").status_code == 401  # revoked
        assert admin.delete(f"/users/{eve}").status_code == 200
        assert admin.delete("/teams/audited").status_code == 200

        rows = audit(admin)
        actions = [(r["actor"], r["action"], r["target"]) for r in rows]
        for expected in [
            ("admin", "team.create", "audited"), ("admin", "user.create", eve),
            ("admin", "user.disable", eve), ("admin", "user.enable", eve),
            ("admin", "token.revoke", f"all tokens of {eve}"), ("admin", "user.delete", eve),
            ("admin", "team.delete", "audited"),
        ]:
            assert expected in actions, expected
        assert any(a == "token.create" and t.endswith(f" of {eve}") for _, a, t in actions)
        refusals = [r for r in rows if r["action"] == "login.refused"]
        assert all(r["address"] == "127.0.0.1" for r in refusals)
        details = [r["detail"] for r in refusals]
        assert sum(d.startswith("invalid token") for d in details) == 1  # 5 requests, 1 row
        assert "missing token" in details
        assert any(r["detail"] == "disabled user" and r["actor"] == eve for r in refusals)
        assert any(r["detail"] == "revoked token" and r["actor"] == eve for r in refusals)
        assert rows == sorted(rows, key=lambda r: r["at"], reverse=True)

        cli = json.loads(ok(gpupool(server, "admin", "audit", "--limit", "3", "--json")))
        assert [r["id"] for r in cli] == [r["id"] for r in rows[:3]]
        assert "team.delete" in ok(gpupool(server, "admin", "audit"))
        fay = unique(names, "fay")
        with server.client(make_user(server, admin, fay)) as c:
            forbidden = c.get("/audit")
            assert forbidden.status_code == 403 and "admin" in forbidden.json()["detail"]
            assert c.get("/tokens").status_code == 403
        assert admin.delete(f"/users/{fay}").status_code == 200


def test_async_client_admin_methods(server: Served, names: list[str]) -> None:
    import asyncio

    from gpupool.sdk import AsyncClient

    gus = unique(names, "gus")

    async def story() -> None:
        async with AsyncClient(server.url, server.token) as gp:
            await gp.create_team("async-team")
            user = await gp.create_user(gus, "async-team")
            assert user.unix_user == (f"{accounts.prefix()}{gus}" if ROOT else None)
            made = await gp.create_token(gus, expires_in_s=3600)
            assert made.expires_at is not None
            assert [t.id for t in await gp.tokens(user=gus)] == [made.id]
            assert (await gp.disable_user(gus)).disabled
            assert not (await gp.enable_user(gus)).disabled
            assert (await gp.revoke_token(made.id)).revoked == [made.id]
            assert (await gp.revoke_user_tokens(gus)).revoked == []
            assert (await gp.delete_user(gus)).tokens_revoked == 0
            assert (await gp.delete_team("async-team")).name == "async-team"
            assert (await gp.audit(limit=1))[0].action == "team.delete"

    asyncio.run(story())


def test_every_admin_operation_refuses_strangers_and_non_admins(
    server: Served, names: list[str]
) -> None:
    """The admin operations this issue added, tried with no token, a bad token and a
    non-admin's token: 401, 401, 403 — and nothing changed."""
    with server.client() as admin:
        victim = unique(names, "vic")
        make_user(server, admin, victim)
        team = unique(names, "tm")
        assert admin.post("/teams", json={"name": team}).status_code == 201
        calls = [("get", "/tokens"), ("post", "/tokens/1/revoke"),
                 ("post", f"/users/{victim}/tokens/revoke"), ("post", f"/users/{victim}/disable"),
                 ("post", f"/users/{victim}/enable"), ("delete", f"/users/{victim}"),
                 ("delete", f"/teams/{team}"), ("get", "/audit"), ("get", "/server"),
                 ("post", "/server/shutdown")]
        body = {"mode": "leave"}  # sent to every POST: only the shutdown reads one
        nobody = httpx.Client(base_url=server.url + "/api/v1", timeout=30)
        forged = httpx.Client(base_url=server.url + "/api/v1", timeout=30,
                              headers={"Authorization": "Bearer gp_not-a-token"})
        with nobody, forged, server.client(make_user(server, admin, unique(names, "eve"))) as eve:
            for method, path in calls:
                extra = {"json": body} if method == "post" else {}
                for client, status in ((nobody, 401), (forged, 401), (eve, 403)):
                    answer = client.request(method.upper(), path, **extra)
                    assert answer.status_code == status, (method, path, answer.text)
        assert admin.get("/server").status_code == 200  # still up: nobody stopped it
        users = {u["name"]: u for u in admin.get("/users").json()}
        assert victim in users and not users[victim]["disabled"]
        assert team in [t["name"] for t in admin.get("/teams").json()]
        assert whoami(server, admin.post("/tokens", json={"user": victim}).json()["token"]
                      ).status_code == 200
        assert admin.delete(f"/teams/{team}").status_code == 200
