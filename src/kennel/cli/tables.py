"""Listings (jobs, studies, backbones, a dataset's classes) drawn so that they fit the terminal, or written whole
for a program to read.

A :class:`Listing` is rows of plain values and the :class:`Column` each value goes in. On a terminal it is a
table no wider than the console: every column gets at least the width of its longest unbreakable piece, the
columns of highest rank are left out until the rest fit, and a line under the table says which were left out.
Rich's own fitting would instead squeeze every column evenly, down to nothing, and cut names with an ellipsis.
A value breaks onto a second line only after one of its column's ``breaks`` characters (a fused backbone after
each ``+``); a job id never breaks. When even the columns of rank 0 do not fit, each row is stacked as its own
block of lines. As TSV, every column is written with its raw value under a header row of keys, a float to 6
significant digits (``0.0577229``, not ``0.057722901532101384``); JSON keeps every digit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

PADDING = 2  # rich's default cell padding, one space each side
TSV_DIGITS = 6  # a float's significant digits in TSV: what a person reads; JSON has every digit


def plain(value: Any) -> str:
    """A value as a table shows it unless its column says otherwise: ``-`` for a missing one."""
    return "-" if value is None else str(value)


def no_style(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Column:
    """One column of a listing. ``key`` names the value in each row, in the TSV header and in JSON."""

    key: str
    header: str = ""  # the table's heading (the key when empty); it may wrap at its spaces
    rank: int = 0  # 0: always in the table; at a narrow width the highest rank is left out first
    show: Callable[[Any], str] = plain  # the text of a value in the table; TSV and JSON keep the value itself
    style: Callable[[Any], str | None] = no_style  # the rich style of a value in the table
    justify: str = "left"
    breaks: str = " "  # characters after which a value may go on in the next line; "" keeps it on one line
    in_table: bool = True  # False: in TSV and JSON only (a job's name, which its id already holds)

    @property
    def heading(self) -> str:
        return self.header or self.key


@dataclass
class Listing:
    """Rows of values (dicts by column key), the columns they go in, and what to say around the table."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    caption: str = ""  # a line under the table (how many, from where)
    notice: str = ""  # what a reader needs however the listing is written (a list cut short): stderr for TSV
    footer: dict[str, Any] | None = None  # a total row, in the table only (a program sums for itself)
    # How to see the columns a narrow table leaves out, said when it does.
    see_all: str = "a wider terminal or --format tsv shows them"


# --- folding and measuring ------------------------------------------------------------------------------


def _pieces(text: str, breaks: str) -> list[str]:
    """``text`` cut after each of the ``breaks`` characters, the character kept with the piece before it."""
    pieces, start = [], 0
    for index, char in enumerate(text):
        if char in breaks:
            pieces.append(text[start : index + 1])
            start = index + 1
    if start < len(text) or not pieces:
        pieces.append(text[start:])
    return pieces


def fold(text: str, width: int, breaks: str) -> str:
    """``text`` in lines of at most ``width`` cells, broken only after the ``breaks`` characters (a piece wider
    than ``width`` stays whole); spaces at the end of a line are dropped."""
    from rich.cells import cell_len

    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for piece in _pieces(paragraph, breaks):
            if line and cell_len((line + piece).rstrip()) > width:
                lines.append(line.rstrip())
                line = piece.lstrip() if " " in breaks else piece
            else:
                line += piece
        lines.append(line.rstrip())
    return "\n".join(lines)


def _narrowest(text: str, breaks: str) -> int:
    from rich.cells import cell_len

    return max(cell_len(piece.rstrip()) for line in text.split("\n") for piece in _pieces(line, breaks))


def _widest(text: str) -> int:
    from rich.cells import cell_len

    return max(cell_len(line) for line in text.split("\n"))


def _table_width(widths: Iterable[int]) -> int:
    """The width of a table whose columns hold ``widths`` cells: their padding, the edges and the lines between."""
    widths = list(widths)
    return sum(w + PADDING for w in widths) + len(widths) + 1


@dataclass
class Plan:
    """The table a listing becomes at one width: the columns kept with their widths, and those left out."""

    widths: dict[str, int] = field(default_factory=dict)  # kept column key -> content width, in table order
    left_out: list[Column] = field(default_factory=list)
    stacked: bool = False  # even the columns of rank 0 do not fit: a block of lines per row


def _measure(listing: Listing, column: Column) -> tuple[int, int]:
    """The narrowest ``column`` can be (its longest unbreakable piece, of the heading or of a value) and the
    width that keeps each of its values on one line."""
    texts = [column.show(row.get(column.key)) for row in listing.rows]
    if listing.footer and column.key in listing.footer:
        texts.append(column.show(listing.footer[column.key]))
    narrowest = max([_narrowest(column.heading, " "), *(_narrowest(text, column.breaks) for text in texts)])
    return narrowest, max([_widest(column.heading), *(_widest(text) for text in texts)])


def plan_table(listing: Listing, width: int) -> Plan:
    """Which columns fit in ``width`` cells, and how wide each is. The columns of rank 0 come first, then the
    others from the lowest rank while they fit, each at the width of its longest unbreakable piece (a column
    too wide for what is left is left out, and a narrower one of higher rank may still fit); then what room is
    left goes to the most important, up to the width that keeps their values on one line."""
    columns = [c for c in listing.columns if c.in_table]
    measured = {c.key: _measure(listing, c) for c in columns}
    narrow = {key: pair[0] for key, pair in measured.items()}
    wide = {key: pair[1] for key, pair in measured.items()}
    by_rank = sorted(columns, key=lambda c: c.rank)  # stable: of equal rank, the leftmost first
    if _table_width(narrow[c.key] for c in by_rank if c.rank == 0) > width:
        return Plan(stacked=True)
    kept: list[Column] = []
    for column in by_rank:
        if column.rank == 0 or _table_width(narrow[c.key] for c in [*kept, column]) <= width:
            kept.append(column)
    widths = {c.key: narrow[c.key] for c in columns if c in kept}  # in the listing's order
    room = width - _table_width(widths.values())
    for column in kept:
        grow = min(room, wide[column.key] - widths[column.key])
        widths[column.key] += grow
        room -= grow
    return Plan(widths=widths, left_out=[c for c in columns if c not in kept])


# --- drawing --------------------------------------------------------------------------------------------


def fitted(listing: Listing, width: int) -> tuple[list[Any], list[str]]:
    """``listing`` fitted to ``width`` cells: what to draw (a table, or a stacked block of lines per row) and
    the lines to say under it (the caption, the notice, and which columns were left out)."""
    plan = plan_table(listing, width)
    body = _stacked(listing) if plan.stacked else [_table(listing, plan)]
    lines = [listing.caption, listing.notice]
    if plan.left_out:
        names = ", ".join(c.heading for c in plan.left_out)
        lines.append(f"left out at {width} columns: {names} ({listing.see_all})")
    return body, [fold(line, width, " ") for line in lines if line]  # at spaces only: a path stays whole


def print_table(listing: Listing, out: Console) -> None:
    """``listing`` on the console ``out``, fitted to its width. Lines are printed with soft wrap: one longer
    than the terminal (a long path) is wrapped by the terminal, not cut by rich."""
    from rich.text import Text

    body, lines = fitted(listing, out.width)
    for part in body:
        out.print(part, soft_wrap=isinstance(part, Text))
    for line in lines:
        out.print(line, style="dim", highlight=False, markup=False, soft_wrap=True)


def fitted_group(listing: Listing, width: int):
    """:func:`fitted` as one renderable, for a listing inside a panel ``width`` cells wide inside."""
    from rich.console import Group
    from rich.text import Text

    body, lines = fitted(listing, width)
    return Group(*body, *[Text(line, style="dim") for line in lines])


def _table(listing: Listing, plan: Plan):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=listing.title)
    columns = {c.key: c for c in listing.columns}
    for key, width in plan.widths.items():
        column = columns[key]
        header = fold(column.heading, width, " ")
        table.add_column(Text(header), justify=column.justify, width=width, no_wrap=True, overflow="fold")

    def cells(row: dict[str, Any]) -> list[Text]:
        shown = []
        for key, width in plan.widths.items():
            column, value = columns[key], row.get(key)
            text = column.show(value) if key in row else ""  # a total row leaves the columns it does not sum empty
            shown.append(Text(fold(text, width, column.breaks), style=column.style(value) or ""))
        return shown

    for row in listing.rows:
        table.add_row(*cells(row))
    if listing.footer:
        table.add_section()
        table.add_row(*cells(listing.footer))
    return table


def _stacked(listing: Listing) -> list[Any]:
    """Each row as a block of lines: its first column's value, then a ``heading  value`` line per other column."""
    from rich.text import Text

    columns = [c for c in listing.columns if c.in_table]
    lines = [Text(listing.title, style="italic")]
    label = max(len(c.heading) for c in columns[1:]) if len(columns) > 1 else 0
    for row in listing.rows:
        first = columns[0]
        lines.append(Text(first.show(row.get(first.key)), style="bold"))
        for column in columns[1:]:
            value = row.get(column.key)
            line = Text(f"  {column.heading:<{label}}  ")
            line.append(column.show(value), style=column.style(value) or "")
            lines.append(line)
    return lines


# --- for programs ---------------------------------------------------------------------------------------


def tsv_value(value: Any) -> str:
    """A value as a program and a person read it: a float to :data:`TSV_DIGITS` significant digits, nothing for a
    missing value, lists and mappings as JSON; no tab or newline inside."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = repr(float(f"{value:.{TSV_DIGITS}g}"))  # 0.0577229, 125.0, 1e-07: still a float to read
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_tsv(listing: Listing, stream: IO[str]) -> None:
    """A header row of column keys, then one line per row with every column, also those the table leaves out."""
    keys = [c.key for c in listing.columns]
    stream.write("\t".join(keys) + "\n")
    for row in listing.rows:
        stream.write("\t".join(tsv_value(row.get(key)) for key in keys) + "\n")


def json_rows(listing: Listing) -> list[dict[str, Any]]:
    return [{c.key: row.get(c.key) for c in listing.columns} for row in listing.rows]
