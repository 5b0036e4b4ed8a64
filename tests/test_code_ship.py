"""Code shipped from the client (``gpupool run --code DIR``): the packing (what is packed,
the same archive for the same tree, the size limit), the unpacking's refusals, and end to
end through a real `gpupool up` (root, bubblewrap): the job runs in its own unpacked copy,
as its owner; a second submit of the same tree sends nothing; another team can neither see
nor use the archive; a corrupt or oversized upload keeps nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpupool.executors.code_unpack import UnsafeArchive, check, run
from gpupool.sdk import code_pack
from gpupool.sdk.code_pack import CodeError, pack
from server_harness import Server, new_user, running, wait_for
from test_console import browser, expect, goto, needs_browser, page, sign_in

__all__ = ["browser", "page"]  # fixtures shared with test_console

MAIN = """
import os, pathlib
print("CWD", os.getcwd())
print("DATA", pathlib.Path("data/input.txt").read_text().strip())
print("EXEC", os.access("tool.sh", os.X_OK))
print("IGNORED", pathlib.Path("build").exists(), pathlib.Path("secret.env").exists())
pathlib.Path("out.txt").write_text("written by the job")
"""


def tree(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "main.py").write_text(MAIN)
    (root / "data" / "input.txt").write_text("hello from the client\n")
    (root / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (root / "tool.sh").chmod(0o755)
    (root / "build").mkdir()
    (root / "build" / "big.bin").write_bytes(b"x" * 1000)
    (root / "secret.env").write_text("TOKEN=nope\n")
    (root / ".gitignore").write_text("build/\n*.env\n")
    return root


def names(data: bytes) -> dict[str, int]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        return {m.name: m.mode for m in t.getmembers()}


def test_packing_respects_gitignore_and_is_the_same_for_the_same_tree(tmp_path: Path) -> None:
    root = tree(tmp_path / "a")
    first = pack(root)
    assert names(first.data) == {".gitignore": 0o644, "data/input.txt": 0o644,
                                 "main.py": 0o644, "tool.sh": 0o755}
    assert first.digest == "sha256:" + hashlib.sha256(first.data).hexdigest()
    os.utime(root / "main.py", (1, 1))  # times do not count, contents do
    assert pack(root).digest == first.digest
    (root / "main.py").write_text(MAIN + "\n# changed\n")
    assert pack(root).digest != first.digest


def test_a_client_remembers_the_digest_of_an_unchanged_tree(tmp_path: Path,
                                                             monkeypatch: Any) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tree(tmp_path / "r")
    found = code_pack.listing(root)
    assert code_pack.known(found) is None
    packed = pack(found)
    code_pack.remember(found, packed)
    assert code_pack.known(code_pack.listing(root)) == (packed.digest, 4, len(packed.data))
    (root / "main.py").write_text(MAIN + "# edited\n")
    assert code_pack.known(code_pack.listing(root)) is None  # changed: packed again


def test_in_a_git_work_tree_git_decides(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tree(tmp_path / "g")
    (root / ".git" / "info").mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".git" / "info" / "exclude").write_text("data/\n")
    packed = names(pack(root).data)
    assert "data/input.txt" not in packed and "main.py" in packed
    assert not any(n.startswith((".git/", "build/")) for n in packed)


def test_over_the_limit_names_the_largest_files(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    (root / "weights.bin").write_bytes(os.urandom(2 << 20))
    (root / "small.py").write_text("print(1)\n")
    with pytest.raises(CodeError, match=r"over the 1 MiB limit.*weights\.bin \(2\.0 MiB\)"):
        pack(root, limit_mib=1)
    with pytest.raises(CodeError, match="not a directory"):
        pack(root / "nope")


def archive(**members: tarfile.TarInfo) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as t:
        for info in members.values():
            t.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return raw.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1
         ) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.size = kind, link, size if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize("bad", [
    info("../escape.txt"), info("/etc/evil"), info("a/../../x"),
    info("link", tarfile.SYMTYPE, "../../etc/passwd"), info("abs", tarfile.SYMTYPE, "/etc"),
    info("hard", tarfile.LNKTYPE, "main.py"), info("dev", tarfile.CHRTYPE),
    info("fifo", tarfile.FIFOTYPE)])
def test_unpacking_refuses_what_could_leave_its_folder(bad: tarfile.TarInfo,
                                                       tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive):
        check([info("main.py"), bad])
    data = archive(ok=info("main.py"), bad=bad)
    assert run(str(tmp_path / "dest"), io.BytesIO(data)) == 2
    assert not (tmp_path / "dest").exists()  # checked before anything is written


def test_unpacking_keeps_inside_links_and_executable_bits(tmp_path: Path) -> None:
    root = tree(tmp_path / "src")
    (root / "data" / "latest").symlink_to("input.txt")
    assert run(str(tmp_path / "dest"), io.BytesIO(pack(root).data)) == 0
    dest = tmp_path / "dest"
    assert (dest / "data" / "latest").read_text() == "hello from the client\n"
    assert os.access(dest / "tool.sh", os.X_OK) and not os.access(dest / "main.py", os.X_OK)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("code") / "home"
    with running(Server(home, "", "2xA100-80GB", isolated=True, extra_env={
            "GPUPOOL_SANDBOX": "auto", "GPUPOOL_CODE_LIMIT_MIB": "1"})) as srv:
        yield srv


def cli(server: Server, token: str, *args: str, cwd: str = "/"
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args],
                          env={**server.env, "GPUPOOL_TOKEN": token}, cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def test_run_with_code_runs_in_its_own_copy_and_sends_a_tree_once(
        server: Server, tmp_path: Path) -> None:
    root = tree(tmp_path / "project")
    tag = uuid.uuid4().hex[:6]
    with server.client() as admin:
        token, unix = new_user(admin, f"ca{tag}")
        other, _ = new_user(admin, f"cb{tag}")
        run1 = cli(server, token, "run", "--code", str(root), "--wait", "--json", "--",
                   "python3", "main.py")
        assert run1.returncode == 0, run1.stderr
        assert "uploaded" in run1.stderr and "files" in run1.stderr
        view = json.loads(run1.stdout)  # --wait --json: the job as it ended
        job = str(view["id"])
        log = admin.get(f"/jobs/{job}/logs").json()["data"]
        job_dir = server.work_dir / "jobs" / job / "1"
        assert f"CWD {job_dir / 'code'}" in log
        assert "DATA hello from the client" in log and "EXEC True" in log
        assert "IGNORED False False" in log  # .gitignore'd files never left the client
        out = job_dir / "code" / "out.txt"
        assert out.read_text() == "written by the job"
        assert out.stat().st_uid == pwd.getpwnam(unix).pw_uid  # unpacked as its owner
        digest = str(view["spec"]["code"])
        again = cli(server, token, "run", "--code", str(root), "--", "python3", "main.py")
        assert again.returncode == 0 and "already on the server, not sent again" in again.stderr
        # another team: cannot see it, cannot use it
        stranger = httpx.Client(base_url=str(admin.base_url), timeout=30,
                                headers={"Authorization": f"Bearer {other}"})
        assert stranger.head(f"/code/{digest}").status_code == 404
        used = stranger.post("/jobs", json={"command": ["true"], "code": digest})
        assert used.status_code == 422 and digest in used.text
        # a body that is not what the digest says, and one over the limit: nothing kept
        fake = "sha256:" + "0" * 64
        bad = stranger.put(f"/code/{fake}", content=b"not the archive")
        assert bad.status_code == 422 and "SHA-256" in bad.text
        assert stranger.head(f"/code/{fake}").status_code == 404
        big = os.urandom(1200 << 10)
        too_big = stranger.put(f"/code/sha256:{hashlib.sha256(big).hexdigest()}", content=big)
        assert too_big.status_code == 413 and "1 MiB" in too_big.text
        assert not [p for p in (server.home / "code").iterdir() if p.name.startswith(".")]
        assert wait_for(lambda: admin.get(f"/jobs/{job}").json()["phase"] == "succeeded")


def test_a_job_file_may_name_its_code_folder(server: Server, tmp_path: Path) -> None:
    tree(tmp_path / "p" / "project")
    spec = tmp_path / "p" / "job.yaml"
    spec.write_text("command: [python3, main.py]\ncode: project\nartifacts: [out.txt]\n")
    done = cli(server, server.token, "submit", str(spec), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert str(view["spec"]["code"]).startswith("sha256:") and view["spec"]["workdir"] is None
    with server.client() as admin:
        log = admin.get(f"/jobs/{view['id']}/logs").json()["data"]
    assert "DATA hello from the client" in log
    missing = cli(server, server.token, "submit", str(spec.with_name("nope.yaml")))
    assert missing.returncode == 2
    spec.write_text("command: [python3, main.py]\ncode: not-there\n")
    bad = cli(server, server.token, "submit", str(spec))
    assert bad.returncode == 2 and "not-there: not a directory" in bad.stderr


TRAIN = """
import os, pathlib
pathlib.Path("model").mkdir()
pathlib.Path("model/weights.bin").write_bytes(b"w" * 4096)
pathlib.Path("model/notes").mkdir()
pathlib.Path("model/notes/a.txt").write_text("epoch 3")
os.symlink("weights.bin", "model/latest")
os.symlink("/etc/shadow", "model/leak")
pathlib.Path("metrics.json").write_text('{"loss": 0.1}')
pathlib.Path("scratch.tmp").write_text("not declared")
"""


def kept(client: httpx.Client, job: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = wait_for(
        lambda: (a := client.get(f"/jobs/{job}/artifacts").json()) and
        all(x["status"] != "collecting" for x in a) and a, timeout=60)
    return found


def test_declared_artifacts_are_kept_listed_and_downloaded_by_the_team_only(
        server: Server, tmp_path: Path) -> None:
    root = tmp_path / "trainer"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    tag = uuid.uuid4().hex[:6]
    with server.client() as admin:
        token, unix = new_user(admin, f"aa{tag}")
        other, _ = new_user(admin, f"ab{tag}")
        done = cli(server, token, "run", "--code", str(root), "--artifact", "model/",
                   "--artifact", "metrics.json", "--artifact", "absent.txt", "--wait",
                   "--json", "--", "python3", "train.py")
        assert done.returncode == 0, done.stderr
        job = str(json.loads(done.stdout)["id"])
        own = httpx.Client(base_url=str(admin.base_url), timeout=30,
                           headers={"Authorization": f"Bearer {token}"})
        [attempt] = kept(own, job)
        assert attempt["status"] == "kept", attempt
        names = {f["name"]: f["size"] for f in attempt["files"]}  # type: ignore[union-attr]
        assert names == {"model/weights.bin": 4096, "model/notes/a.txt": 7,
                         "metrics.json": 13}
        assert sorted(attempt["missing"]) == [  # type: ignore[type-var]
            "absent.txt", "model/leak (a link leading outside: not kept)"]
        listed = cli(server, token, "artifacts", job)
        assert listed.returncode == 0 and "kept" in listed.stdout, listed.stderr
        dest = tmp_path / "results"
        got = cli(server, token, "artifacts", job, "--download", str(dest))
        assert got.returncode == 0, got.stderr
        assert (dest / "model" / "weights.bin").read_bytes() == b"w" * 4096
        assert (dest / "model" / "latest").resolve() == (dest / "model" / "weights.bin")
        assert (dest / "metrics.json").read_text() == '{"loss": 0.1}'
        assert not (dest / "model" / "leak").exists() and not (dest / "scratch.tmp").exists()
        # another team sees neither the list nor the archive; an admin sees both
        stranger = httpx.Client(base_url=str(admin.base_url), timeout=30,
                                headers={"Authorization": f"Bearer {other}"})
        assert stranger.get(f"/jobs/{job}/artifacts").status_code == 404
        assert stranger.get(f"/jobs/{job}/artifacts/1").status_code == 404
        assert cli(server, other, "artifacts", job).returncode != 0
        assert admin.get(f"/jobs/{job}/artifacts/1").status_code == 200
        stored = next((server.home / "artifacts").glob(f"*/{job}/1.tar.gz"))
        assert oct(stored.stat().st_mode & 0o777) == "0o600"
        del unix


@needs_browser
def test_the_console_job_page_lists_and_downloads_the_artifacts(
        server: Server, page: Any, tmp_path: Path) -> None:
    with server.client() as admin:
        made = admin.post("/jobs", json={
            "command": ["sh", "-c", "echo '{\"acc\": 0.9}' > metrics.json"],
            "artifacts": ["metrics.json"]})
        assert made.status_code == 201, made.text
        job = str(made.json()["id"])
        wait_for(lambda: admin.get(f"/jobs/{job}").json()["phase"] == "succeeded", timeout=60)
        kept(admin, job)
    sign_in(page, server, server.token)
    goto(page, server, f"/jobs/{job}")
    card = page.get_by_test_id("job-artifacts")
    expect(card).to_contain_text("metrics.json")
    with page.expect_download() as info:
        page.get_by_test_id("download-artifacts-1").click()
    saved = tmp_path / "got.tar.gz"
    info.value.save_as(saved)
    with tarfile.open(saved) as t:
        member = t.extractfile("metrics.json")
        assert member is not None and member.read() == b'{"acc": 0.9}\n'


def test_the_new_routes_want_a_token(server: Server) -> None:
    """Code uploads, artifacts and the GPU heat map answer 401 to a request without a token
    (and with a made-up one); nothing is stored."""
    digest = "sha256:" + hashlib.sha256(b"x").hexdigest()
    with server.client() as admin:
        job = admin.post("/jobs", json={"command": ["true"], "artifacts": ["x"]}).json()["id"]
    for headers in ({}, {"Authorization": "Bearer gp_not-a-token"}):
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30, headers=headers) as anon:
            assert anon.head(f"/code/{digest}").status_code == 401
            assert anon.put(f"/code/{digest}", content=b"x").status_code == 401
            assert anon.get(f"/jobs/{job}/artifacts").status_code == 401
            assert anon.get(f"/jobs/{job}/artifacts/1").status_code == 401
            assert anon.get("/usage/gpus").status_code == 401
    assert not (server.home / "code" / (digest.removeprefix("sha256:") + ".tar.gz")).exists()
