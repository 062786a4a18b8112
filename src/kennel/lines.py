"""The lines a person reads while kennel works (a job's metric lines, a trial's line, a rule's finding, a warning),
folded to the terminal's width the way cargo and git fold theirs: broken only between fields or words, never inside
one, each line after the first indented. A name, a number or a path stays whole (``valid_accuracy=0.913`` is still
matched by ``valid_accuracy=([0-9.eE+-]+)``, on whichever line it lands), and a piece wider than a line has a line of
its own. Where the stream is no terminal (a pipe, a log file, a CI log), 80 columns."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TextIO

WIDTH = 80  # where the stream is not a terminal
INDENT = "    "


def width(stream: TextIO | None = None) -> int:
    """The columns of the terminal ``stream`` (stdout by default) writes to; :data:`WIDTH` for anything else, or
    ``$COLUMNS`` where it is set."""
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # a test's capture, a closed stream
        pass
    try:
        return max(20, int(os.environ["COLUMNS"]))
    except (KeyError, ValueError):
        return WIDTH


def fold(pieces: Iterable[str], columns: int = WIDTH, indent: str = INDENT) -> str:
    """``pieces`` joined by spaces, in lines of at most ``columns`` characters broken only between pieces; the
    lines after the first start with ``indent``."""
    lines: list[str] = []
    line = ""
    for piece in pieces:
        if not line:
            line = piece
        elif len(line) + 1 + len(piece) <= columns:
            line += " " + piece
        else:
            lines.append(line)
            line = indent + piece
    lines.append(line)
    return "\n".join(lines)


def fold_words(text: str, columns: int = WIDTH, indent: str = INDENT) -> str:
    """``text`` folded at its spaces (:func:`fold`); a line of it that fits stays as it is, its own line breaks
    are kept."""
    return "\n".join(line if len(line) <= columns else fold(line.split(), columns, indent) for line in text.split("\n"))


def fitted(text: str, stream: TextIO | None = None) -> str:
    """``text`` folded at its words (:func:`fold_words`) to the width of ``stream`` (:func:`width`)."""
    return fold_words(text, width(stream))


class FoldingFormatter(logging.Formatter):
    """A log line folded at its words to the width of stderr (the exception's traceback, if any, as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return fitted(super().formatMessage(record), sys.stderr)
