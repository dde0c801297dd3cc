"""Tables that fit: every table taskrace prints is laid out here, then drawn by rich.

The rule, for people reading a terminal, a pipe or a log (rich assumes 80 columns when
stdout is not a terminal): a table is no wider than the console, no cell is cut short
("…"), and no row takes more than two lines. Rich wraps and draws; what it cannot be told
is "at most two lines per row" or "leave a column out rather than cut every cell", so
this module works out each column's width from its cells and gives rich a table whose
columns all have a fixed width. Words are never broken: a cell wraps at its spaces only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

GAP = 2  # spaces between two columns (one of padding, one blank divider); no outer edges

Cell = Union[str, Text]


@dataclass(frozen=True)
class Spec:
    """A column of a table that always shows all its columns (bench, diff, cluster)."""

    header: str
    justify: str = "left"


def plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def one_line(text: str) -> int:
    """Width at which the text stays on one line."""
    return cell_len(text)


def two_lines(text: str) -> int:
    """Narrowest width at which the text wraps (at spaces) onto at most two lines. Rich
    wraps greedily, which at this width never needs a third line: its first line holds at
    least the words of the best split, so what is left fits on the second."""
    words = text.split(" ")
    splits = (max(cell_len(" ".join(words[:i])), cell_len(" ".join(words[i:]))) for i in range(1, len(words)))
    return min(splits, default=cell_len(text))


@dataclass(frozen=True)
class Need:
    """The widths a column can take: ``one``, everything on one line; ``flat``, every row
    on one line but the header perhaps on two (a wrapped header costs no row a line);
    ``two``, rows too on at most two lines."""

    one: int
    flat: int
    two: int


def needs(header: str, cells: list[Cell]) -> Need:
    texts = [plain(c) for c in cells]
    body_one = max(map(one_line, texts), default=0)
    two = max(map(two_lines, [header] + texts))
    return Need(max(body_one, one_line(header)), max(body_one, two), two)


def total(widths: list[int]) -> int:
    """The table's width for these column widths."""
    return sum(widths) + GAP * max(len(widths) - 1, 0)


def widen(needs: list[Need], width: int) -> list[int]:
    """Start every column at its two-line width, then unwrap while the table still fits:
    rows first (a row on one line reads best), headers after; the cheapest column
    first, so a column that costs one character to unwrap does not wait for a wide one."""
    widths = [n.two for n in needs]
    for target in ("flat", "one"):
        goal = [getattr(n, target) for n in needs]
        for i in sorted(range(len(widths)), key=lambda i: goal[i] - widths[i]):
            if total(widths) + goal[i] - widths[i] <= width:
                widths[i] = max(widths[i], goal[i])
    return widths


def make(title: str | None, headers: list[str], justify: list[str], rows: list[list[Cell]],
         widths: list[int]) -> Table:
    """A rich table with these exact column widths. A blank divider and one rule under the
    header read as well in a log or a pipe as in a terminal, and cost 2 characters per
    column where a boxed table costs 3. ``fold`` instead of rich's default ellipsis: if a
    single word is ever wider than its column, it continues on the next line, never cut."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                  header_style="bold", title_style="bold", title_justify="left")
    for header, how, w in zip(headers, justify, widths):
        table.add_column(header, justify=how, width=w, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def fitted(title: str | None, specs: list[Spec], rows: list[list[Cell]], width: int) -> Table:
    """Every column shown, each as narrow as two lines allow, widened to one line where
    the width leaves room."""
    need = [needs(s.header, [r[i] for r in rows]) for i, s in enumerate(specs)]
    widths = widen(need, width) if total([n.two for n in need]) <= width else [n.two for n in need]
    return make(title, [s.header for s in specs], [s.justify for s in specs], rows, widths)
