"""``gpupool artifacts JOB``: what each attempt of a job kept of its declared ``artifacts``
(a table, or ``--json``), and ``--download DIR`` to fetch one attempt's files (default: the
last that kept any) and unpack them into DIR (their names as in the job's working
directory; nothing is written outside DIR)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpupool.cli.client_opts import Json, Token, Url, connect, fail, handled, out, print_json


def artifacts(
    job: Annotated[str, typer.Argument(help="Job id or name.")],
    download: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Unpack the files into DIR (created if missing).")] = None,
    attempt: Annotated[int | None, typer.Option(
        metavar="N", help="With --download: this attempt (default: the last that kept "
        "files).", min=1)] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List a job's artifacts by attempt, or download them.

    Example: gpupool artifacts train-7 --download ./results
    """
    with connect(url, token) as client, handled():
        if download is None:
            found = client.artifacts(job)
            if json_out:
                print_json(found)
                return
            if not found:
                out.print(f"job {job} declared no artifacts (artifacts: [...] in its spec)")
                return
            made = Table(box=None, pad_edge=False, header_style="bold")
            for column in ("ATTEMPT", "STATUS", "FILES", "SIZE", "MISSING"):
                made.add_column(column, no_wrap=column != "STATUS")
            for a in found:
                made.add_row(str(a.attempt), a.status, str(len(a.files)),
                              f"{a.size / 2**20:,.1f} MiB", ", ".join(a.missing))
            out.print(made)
            return
        download.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            archive = client.download_artifacts(job, Path(tmp), attempt)
            _unpack(archive, download)
        out.print(f"unpacked into {download}", soft_wrap=True, markup=False)


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack with the rules of a job's code (executors/code_unpack: nothing outside ``dest``,
    no devices, no links leading out); exit 1 naming the problem otherwise."""
    import contextlib
    import io

    from gpupool.executors.code_unpack import run

    problem = io.StringIO()
    with archive.open("rb") as source, contextlib.redirect_stderr(problem):
        code = run(str(dest), source)
    if code != 0:
        raise fail(problem.getvalue().strip() or "cannot unpack the artifacts", code=1)
