"""The kennel folders of whoever runs the tests, and what is in them: conftest.py snapshots them before the session
and fails it when anything in them changed. Plain Python, no kennel: it runs before anything imports kennel."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

Listing = dict[str, tuple[int, int]]  # a file's path within its folder -> (size, mtime in ns)


def caller_folders(environ: Mapping[str, str]) -> list[Path]:
    """Where a kennel run by the caller writes: ``$KENNEL_HOME`` and ``$KENNEL_CACHE`` as set, and the defaults
    (``~/.kennel``, ``$XDG_CACHE_HOME/kennel`` or ``~/.cache/kennel``), where a process started without those
    variables writes."""
    home = Path.home()
    cache = Path(environ.get("XDG_CACHE_HOME") or home / ".cache") / "kennel"
    found = [environ.get("KENNEL_HOME"), environ.get("KENNEL_CACHE"), home / ".kennel", cache, home / ".cache/kennel"]
    folders = [Path(folder).expanduser().absolute() for folder in found if folder]
    return list(dict.fromkeys(folders))


def listing(folder: Path) -> Listing | None:
    """Every file under ``folder`` with its size and modification time; None when ``folder`` does not exist."""
    if not folder.is_dir():
        return None
    files: Listing = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                stat = os.lstat(path)
            except OSError:  # gone since the walk listed it
                continue
            files[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns)
    return files


class FolderSnapshot:
    """What ``folders`` held when it was made; :meth:`changes` says what is new, changed or gone since."""

    def __init__(self, folders: list[Path]) -> None:
        self.before = {folder: listing(folder) for folder in folders}

    def changes(self) -> list[str]:
        found = []
        for folder, before in self.before.items():
            after = listing(folder)
            if after == before:
                continue
            if before is None:
                found.append(f"{folder} (created)")
                before = {}
            after = after or {}
            found += [f"{folder / name} (new)" for name in sorted(after.keys() - before.keys())]
            found += [
                f"{folder / name} (changed)" for name in sorted(after) if name in before and after[name] != before[name]
            ]
            found += [f"{folder / name} (removed)" for name in sorted(before.keys() - after.keys())]
        return found
