"""Split fingerprints that do not re-read unchanged photos.

A split's fingerprint keys the feature cache, so every job computes it; hashing every photo's bytes each time
means a warm job on 8,000 photos reads them all again just to learn that nothing changed. The digest of each
file is kept in a small SQLite table keyed by its resolved path and checked against its size and mtime, so a
warm call costs one ``stat`` per file and a few queries.

The table is a cache, never the truth: when it cannot be opened or written, the bytes are hashed as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import TypeVar

from kennel.data.layout import DatasetLayout, Split
from kennel.home import cache_dir

log = logging.getLogger(__name__)

FILENAME = "fingerprints.sqlite"
_CHUNK = 900  # under SQLite's oldest default limit of 999 bound parameters per statement
_SCHEMA = "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, digest BLOB)"
_warned: set[Path] = set()
T = TypeVar("T")


def file_digest(path: Path) -> bytes:
    """The per-file digest the fingerprint has always used; changing it would orphan every cached feature."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()


def _resolve(path: Path, folders: dict[str, str]) -> str:
    """``os.path.realpath(path)``, resolving each folder once: realpath costs an lstat per path component, most
    of a warm call's time when done for every photo, and the photos of one class share their folder."""
    if os.path.islink(path):
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    if folder not in folders:
        folders[folder] = os.path.realpath(folder)
    return os.path.join(folders[folder], name)


class DigestStore:
    """Per-file digests remembered across processes, in ``cache_dir()/fingerprints.sqlite`` by default.

    Each call opens its own short-lived connection, so one store may be shared by threads and survives a fork
    (a SQLite connection may do neither); WAL mode and a busy timeout let parallel trials read and write at once.
    """

    def __init__(self, path: Path | None = None, timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else cache_dir() / FILENAME
        self.timeout = timeout

    def digests(self, paths: Sequence[Path]) -> list[bytes]:
        """The digest of each file in ``paths``, reading only files that are new or changed since last seen."""
        # Stat before reading: a file edited in between is stored with its older mtime, so it is re-read next time.
        stats = [os.stat(p) for p in paths]
        folders: dict[str, str] = {}
        keys = [_resolve(p, folders) for p in paths]
        known = self._run(lambda db: self._lookup(db, keys)) or {}
        result, fresh = [], []
        for path, key, st in zip(paths, keys, stats, strict=True):
            row = known.get(key)
            if row is not None and row[:2] == (st.st_size, st.st_mtime_ns):
                result.append(row[2])
                continue
            digest = file_digest(path)
            result.append(digest)
            fresh.append((key, st.st_size, st.st_mtime_ns, digest))
        if fresh:
            self._run(lambda db: self._save(db, fresh))
        return result

    @staticmethod
    def _lookup(db: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[int, int, bytes]]:
        known = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT path, size, mtime_ns, digest FROM digests WHERE path IN ({marks})"
            known.update((path, (size, mtime, bytes(digest))) for path, size, mtime, digest in db.execute(query, chunk))
        return known

    @staticmethod
    def _save(db: sqlite3.Connection, rows: list[tuple[str, int, int, bytes]]) -> None:
        with db:  # one transaction for the whole split
            db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)", rows)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T | None:
        """``work`` on a fresh connection; ``None`` when the database is unusable, after one try at recreating a
        corrupt file."""
        for attempt in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with closing(sqlite3.connect(self.path, timeout=self.timeout)) as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute(_SCHEMA)
                    return work(db)
            except sqlite3.OperationalError as exc:  # locked past the timeout, read-only, cannot be opened
                return self._give_up(exc)
            except sqlite3.DatabaseError as exc:  # not a database, or a malformed one: a cache may start over
                if attempt:
                    return self._give_up(exc)
                log.warning("fingerprint cache %s is damaged (%s); recreating it", self.path, exc)
                self._remove()
            except OSError as exc:  # the cache folder cannot be made
                return self._give_up(exc)
        return None

    def _remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            # Should this fail, so does the next connect, and the caller falls back to reading the bytes.
            with suppress(OSError):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _give_up(self, exc: Exception) -> None:
        if self.path not in _warned:
            _warned.add(self.path)
            log.warning("fingerprint cache %s unusable (%s); hashing photos without it", self.path, exc)
        return None


def split_fingerprint(split: Split, store: DigestStore | None = None) -> str:
    """A hash of every file's relative path, label and bytes: renaming, relabelling, editing or adding a photo
    changes it. Equal to :func:`kennel.features.split_fingerprint`, so feature cache entries stay valid."""
    digests = (store or DigestStore()).digests([path for path, _ in split.files])
    digest = hashlib.blake2b(digest_size=16)
    for (path, label), file_hash in zip(split.files, digests, strict=True):
        digest.update(f"{path.relative_to(split.root)}\0{label}\0".encode())
        digest.update(file_hash)
    return digest.hexdigest()


def dataset_fingerprint(layout: DatasetLayout) -> str:
    """One hash of a dataset's train, valid and test splits (each as :func:`split_fingerprint`): what a job trained
    on, recorded with it and with every registered version of its model."""
    digest = hashlib.blake2b(digest_size=16)
    for name in ("train", "valid", "test"):
        digest.update(f"{name}\0{split_fingerprint(layout[name])}\0".encode())
    return digest.hexdigest()
