"""The folder an export goes to: checked before any work, and filled all at once, so that a killed or failed export
leaves the folder as it was (a reader, or an upload script, never sees half an export)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kennel.atomic import swap_folder_into_place
from kennel.errors import PathError, UsageError


def check_target(out: Path, source: Path, force: bool) -> None:
    """Refuse an ``out`` that holds something (unless ``force``), that is a file, or that would take the model
    being exported with it."""
    out, source = out.expanduser().resolve(), source.resolve()
    if out == source or out in source.parents:
        raise UsageError(f"--out {out} holds the model being exported; choose another folder")
    if out.exists() and not out.is_dir():
        raise PathError(out, "is a file; --out names a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out} is not empty; choose an empty or new folder, or replace it with --force")


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Yield an empty folder beside ``out``; on success it becomes ``out``, replacing what was there."""
    out = out.expanduser()
    token = secrets.token_hex(4)
    tmp = out.parent / f".{out.name}.tmp-{token}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise PathError.of(exc, "cannot create the export folder", out) from None
    try:
        yield tmp
        swap_folder_into_place(tmp, out, token)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
