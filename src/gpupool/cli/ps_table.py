"""The job table of ``gpupool ps``, drawn fast: the very characters and styles that
``jobs_render.rows_table`` (a rich Table) prints, at ~1/50 of its cost (a rich Table lays out,
measures and renders each of 1,600 cells of 200 rows one by one: ~100 ms).

``JobsTable`` lays the table out as rich does (the same column widths, padding, right-aligned
ids, bold headers, coloured phases, reasons cut with "…" to fit, lines cropped at the
console's width) and hands rich's console the finished lines, which it styles and writes as
it would the Table's. Only the cases whose layout is ported here are drawn this way: every
cell plain ASCII text (or "…") without edge spaces or emoji codes (``:name:``), not ``wide``,
and a console wide enough that only the REASON column narrows. Anything else is drawn by the
rich Table itself. ``tests/test_ps_fast.py`` compares both, character for character.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from rich.segment import Segment

from gpupool.cli.job_cells import HEADERS, PHASE_AT, PHASE_STYLE, JobRow, shorten

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType

LAST = len(HEADERS) - 1
PAD = tuple(1 if i in (0, LAST) else 2 for i in range(len(HEADERS)))
"""Each column's padding: one space on each side, none on the table's outer edges."""
_EMOJI = re.compile(r":\S*?:")
"""What rich's emoji replacement looks at (``:smile:``): such a cell is drawn by rich."""


def print_jobs(console: Console, rows: Sequence[JobRow], empty: str, wide: bool = False) -> None:
    """The job table of ``rows`` on ``console``, or ``empty`` (dim) when there are none, as
    ``jobs_render.print_table(console, jobs_render.rows_table(rows, wide), empty)``."""
    if rows:
        console.print(JobsTable(rows, wide))
    else:
        console.print(empty, style="dim")


class JobsTable:
    """A renderable: the table of ``jobs_render.rows_table(rows, wide)``, laid out here when
    the module says it can be (else that Table itself)."""

    def __init__(self, rows: Sequence[JobRow], wide: bool = False) -> None:
        self.rows = rows
        self.wide = wide

    def __rich_console__(self, console: Console,
                         options: ConsoleOptions) -> Iterator[Segment | RenderableType]:
        lines = None if self.wide else lay_out(self.rows, options.max_width)
        if lines is None:
            from gpupool.cli.jobs_render import rows_table

            yield rows_table(self.rows, self.wide)
            return
        header, body = lines
        bold = console.get_style("bold")
        for cell in header:
            yield Segment(cell, bold)
        yield Segment.line()
        styles = {phase: console.get_style(style) for phase, style in PHASE_STYLE.items()}
        for row, (before, after) in zip(self.rows, body, strict=True):
            yield Segment(before)
            yield Segment(row.phase, styles[row.phase])
            yield Segment(after)
            yield Segment.line()


Lines = tuple[list[str], list[tuple[str, str]]]
"""The header as its styled pieces (each bold on its own, as rich writes them) and each row
as its text before and after the phase."""


def lay_out(rows: Sequence[JobRow], max_width: int) -> Lines | None:
    """The lines of the table at ``max_width`` columns, as rich lays them out; None when the
    case is not one the module handles."""
    table = [list(HEADERS)] + [[*row.cells[:LAST], shorten(row.why)] for row in rows]
    if not all(_plain(cell) for line in table for cell in line):
        return None
    columns = list(zip(*table, strict=True))
    longest = [max(len(cell) for cell in column) for column in columns]
    fixed = [longest[i] + PAD[i] for i in range(LAST)]  # min_width: never narrower
    widths = _widths(longest, fixed, max_width)
    if widths is None:
        return None
    inner = [w - p for w, p in zip(widths, PAD, strict=True)]
    header = []
    for i, title in enumerate(HEADERS):
        if i:
            header.append(" ")
        header.append(_fit(title, inner[i], right=i == 0))
        if i < LAST:
            header.append(" ")
    body = []
    for line in table[1:]:
        cells = [_fit(cell, inner[i], right=i == 0) for i, cell in enumerate(line)]
        phase = line[PHASE_AT]
        before = "  ".join(cells[:PHASE_AT]) + "  "
        after = cells[PHASE_AT][len(phase):] + "  " + "  ".join(cells[PHASE_AT + 1:])
        body.append((before, after))
    return header, body


def _plain(cell: str) -> bool:
    text = cell.replace("…", "")
    return (text.isascii() and text.isprintable() and cell[:1] != " " and cell[-1:] != " "
            and (cell.count(":") < 2 or _EMOJI.search(cell) is None))


def _fit(text: str, width: int, right: bool = False) -> str:
    """``text`` in ``width`` columns as a rich cell draws it (no wrap: cut with "…")."""
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)


def _widths(longest: list[int], fixed: list[int], max_width: int) -> list[int] | None:
    """Each column's width with its padding, as ``rich.table.Table`` computes it for these
    columns (none wraps; all but the last have a min_width of their longest cell); None
    when a column other than the last would narrow or vanish (rich's layout of those cases
    is not ported)."""
    widths = [_measure(longest[i], PAD[i], fixed[i] if i < LAST else None, max_width) or 1
              for i in range(len(longest))]
    if sum(widths) > max_width:
        reduced = _ratio_reduce(sum(widths) - max_width, [1] * len(widths), widths, widths)
        widths = [_measure(longest[i], PAD[i], fixed[i] if i < LAST else None, width)
                  for i, width in enumerate(reduced)]
    if widths[:LAST] != fixed or widths[LAST] - PAD[LAST] < 1:
        return None
    return widths


def _measure(longest: int, pad: int, min_width: int | None, max_width: int) -> int:
    """The maximum of rich's measurement of a column whose longest cell has ``longest``
    characters (``Table._measure_column``: a padded single-line text per cell)."""
    if max_width < 1:
        return 0
    cell = max_width if max_width - pad < 1 else min(longest + pad, max_width)
    return cell if min_width is None else max(cell, min_width)


def _ratio_reduce(total: int, ratios: list[int], maximums: list[int],
                  values: list[int]) -> list[int]:
    """``rich._ratio.ratio_reduce``: take ``total`` off ``values`` in proportion to
    ``ratios``, at most ``maximums``."""
    ratios = [ratio if most else 0 for ratio, most in zip(ratios, maximums, strict=True)]
    total_ratio = sum(ratios)
    if not total_ratio:
        return values[:]
    remaining = total
    result = []
    for ratio, most, value in zip(ratios, maximums, values, strict=True):
        if ratio and total_ratio > 0:
            distributed = min(most, round(ratio * remaining / total_ratio))
            result.append(value - distributed)
            remaining -= distributed
            total_ratio -= ratio
        else:
            result.append(value)
    return result
