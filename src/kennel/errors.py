"""The base of kennel's expected failures: what a person can fix (a bad value, a damaged file), said in one line.

A command catches :class:`KennelError` at its edge, prints ``error: MESSAGE`` and exits with ``exit_code``; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class KennelError(Exception):
    """An expected failure; the message names the thing and what was expected of it."""

    exit_code = 2
