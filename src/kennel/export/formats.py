"""The export formats, by the name ``kennel export --format`` takes: each writes a model artifact into an empty
folder in the form one platform loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.registry import Registry

if TYPE_CHECKING:
    from kennel.artifact import Artifact


@dataclass(frozen=True)
class ExportFormat:
    """``write(artifact, folder)`` fills the empty ``folder``; ``summary`` says what it writes (for ``--help``),
    ``usage`` how to use it, with ``{out}`` for the folder it ends up in."""

    write: Callable[[Artifact, Path], None]
    summary: str
    usage: str


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")
