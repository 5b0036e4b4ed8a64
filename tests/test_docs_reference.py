"""The user guide (docs/guide, mkdocs.yml) stays true to the code and readable offline:

- the generated references (docs/guide/reference/cli.md from the Typer app, job-yaml.md from
  the JobSpec model) are what scripts/gen_reference.py makes of the code now: a test
  regenerates them into a temp dir and diffs them with the committed files;
- the guide builds with ``mkdocs build --strict`` (broken links and anchors fail), and no
  built page loads anything from another host (no web fonts, no CDN).

When a reference test fails, refresh the pages with the command it names and commit them.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Literal

import pytest
import typer
from pydantic import BaseModel, Field

from html_loads import css_urls, foreign, page_loads

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "scripts" / "gen_reference.py"
REFERENCE = REPO / "docs" / "guide" / "reference"
REFRESH = ".venv/bin/python scripts/gen_reference.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _generator()


@pytest.mark.parametrize("name", sorted(gen.PAGES))
def test_committed_reference_matches_the_code(name: str, tmp_path: Path) -> None:
    assert gen.main(["--out", str(tmp_path)]) == 0
    fresh = (tmp_path / name).read_text()
    committed_path = REFERENCE / name
    committed = committed_path.read_text() if committed_path.exists() else ""
    if fresh != committed:
        diff = "".join(difflib.unified_diff(
            committed.splitlines(keepends=True), fresh.splitlines(keepends=True),
            f"committed docs/guide/reference/{name}", "generated from the code"))
        pytest.fail(f"docs/guide/reference/{name} is out of date: run `{REFRESH}` and commit "
                    f"the result.\n{diff[:6000]}")


def test_references_do_not_depend_on_the_terminal_or_environment() -> None:
    """`--check` in a narrow terminal with other settings still finds the pages current."""
    env = {**os.environ, "COLUMNS": "40", "TERM": "dumb", "NO_COLOR": "1",
           "GPUPOOL_URL": "http://192.0.2.1:1", "GPUPOOL_HOME": "/nonexistent"}
    done = subprocess.run([sys.executable, str(GENERATOR), "--check"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_check_names_the_stale_page_and_the_command(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert gen.main(["--out", str(tmp_path)]) == 0
    (tmp_path / "cli.md").write_text("old\n")
    assert gen.main(["--out", str(tmp_path), "--check"]) == 1
    assert f"out of date: cli.md; run {REFRESH}" in capsys.readouterr().err


# ---- the generator's rendering, on small inputs -------------------------------------------


def test_cli_page_lists_commands_arguments_options_and_defaults() -> None:
    app = typer.Typer(help="A tool.")
    group = typer.Typer(help="Things | stuff.")
    app.add_typer(group, name="thing")

    @app.command()
    def go(
        target: Annotated[str, typer.Argument(help="Where to go.")],
        speed: Annotated[float, typer.Option(help="How fast, e.g. 1.5.")] = 2.0,
        tag: Annotated[list[str] | None, typer.Option("--tag", "-t", metavar="NAME=VALUE",
                                                      help="A tag (repeat).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say it.")] = False,
    ) -> None:
        """Go somewhere.

        Slowly *or* fast_ly.
        """

    @group.command("make")
    def make() -> None:
        """Make a thing."""

    page = gen.cli_reference(app)
    assert "## tool go" not in page  # the root is named gpupool, whatever the app
    assert "## gpupool go\n\n```\ngpupool go [OPTIONS] TARGET\n```" in page
    assert "Slowly \\*or\\* fast\\_ly." in page
    assert "| `TARGET` | `TEXT` | yes | Where to go. |" in page
    assert "| `--speed` | `NUMBER` | `2.0` | How fast, e.g. 1.5. |" in page
    assert "| `--tag`, `-t` | `NAME=VALUE` |  | A tag (repeat). (May be repeated.) |" in page
    assert "| `--dry-run` | `flag` |  | Only say it. |" in page
    assert "| [`gpupool thing`](#gpupool-thing) | Things \\| stuff. |" in page
    assert "## gpupool thing make" in page


def test_yaml_page_shows_types_defaults_bounds_and_descriptions() -> None:
    class Spec(BaseModel):
        """A spec. ``size`` matters."""

        command: list[str] = Field(min_length=1, description="What to run.")
        size: int = Field(3, ge=1, le=10)
        mode: Literal["a", "b-c"] = "a"
        label: str | None = Field(None, max_length=8, pattern=r"^[a-z]+$")

    def options() -> dict[str, tuple[str, str]]:
        return {"size": ("--size", "How big.")}

    page = gen.job_yaml_reference(Spec, options, submit_help="Reads a file.")
    assert "A spec. `size` matters." in page
    assert "| [`command`](#command) | list of text | required |" in page
    assert "| [`mode`](#mode) | `\"a\"` or `\"b-c\"` | `\"a\"` |" in page
    assert "| [`label`](#label) | text or `null` | `null` |" in page
    size = page[page.index("### `size`"):page.index("### `mode`")]
    assert "- Allowed: from 1 to 10" in size
    assert "- `gpupool run`: `--size`" in size
    assert "How big." in size  # no description: the run option's help
    assert "- Allowed: at least 1 item" in page
    assert "- Allowed: at most 8 characters; matches `^[a-z]+$`" in page
    assert "What to run." in page


# ---- the built guide ----------------------------------------------------------------------


def _mkdocs_missing() -> str | None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        return "mkdocs and mkdocs-material are not installed (pip install -e '.[dev]')"
    return None


def _build(site: Path, config: Path = REPO / "mkdocs.yml") -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` as scripts/test.sh runs it (never with --quiet, which hides
    the warnings that strict mode counts, so nothing fails)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


needs_mkdocs = pytest.mark.skipif(_mkdocs_missing() is not None, reason=_mkdocs_missing() or "")


@needs_mkdocs
def test_guide_builds_strict_and_loads_nothing_from_another_host(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = _build(site)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 10 and (site / "reference" / "cli.html").exists()
    problems = []
    for page in pages:
        base = page.as_uri()
        loads = page_loads(page.read_text())
        problems += [f"{page.relative_to(site)}: {u}" for u in loads.urls
                     if foreign(base, u, "file://")]
    for sheet in site.rglob("*.css"):
        problems += [f"{sheet.relative_to(site)}: {u}" for u in css_urls(sheet.read_text())
                     if foreign(sheet.as_uri(), u, "file://")]
    assert not problems, f"the built guide loads from other hosts: {problems[:20]}"
    assert "fonts.googleapis" not in (site / "index.html").read_text()


@needs_mkdocs
def test_a_broken_link_or_anchor_fails_the_strict_build(tmp_path: Path) -> None:
    guide = tmp_path / "guide"
    shutil.copytree(REPO / "docs" / "guide", guide)
    with (guide / "index.md").open("a") as page:
        page.write("\n[broken](concepts.md#no-such-section)\n")
    config = tmp_path / "mkdocs.yml"
    text = (REPO / "mkdocs.yml").read_text()
    assert "docs_dir: docs/guide\n" in text
    config.write_text(text.replace("docs_dir: docs/guide\n", f"docs_dir: {guide}\n"))
    done = _build(tmp_path / "site", config)
    assert done.returncode != 0
    assert "no-such-section" in done.stdout + done.stderr
