"""The claim: a worker holds it while it counts the study's trials and asks for the next one, so the study ends
with exactly the requested number however many workers race for the last trial.

A file lock in the study folder serves the journal file and SQLite, whose workers all run on one machine. A study
in PostgreSQL is shared by machines that have no folder in common, so its claim is an advisory lock in the
database itself.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from kennel.tune.storage import CONNECT_TIMEOUT_S, backend

if TYPE_CHECKING:
    from kennel.tune.study import StudyRecord


def claim_lock(record: StudyRecord) -> AbstractContextManager[Any]:
    """The lock that makes count-then-ask atomic for every worker of ``record``'s study."""
    if record.storage and backend(record.storage) == "postgresql":
        return AdvisoryLock(record.storage, f"kennel.claim:{record.name}")
    from filelock import FileLock

    record.path.mkdir(parents=True, exist_ok=True)
    return FileLock(str(record.path / "claim.lock"))


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (``pg_advisory_lock`` takes a bigint; Python's hash() varies by
    process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class AdvisoryLock:
    """PostgreSQL's session-level advisory lock on ``key``, held on a connection of its own.

    Every machine on the database sees one holder at a time. The server releases the lock when its connection
    ends, so a worker killed while it holds the claim cannot leave the study locked. A fresh connection per claim
    costs a few milliseconds, nothing beside a trial, and survives a database restart between trials.
    """

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.key = advisory_key(name)
        self._engine: Any = None
        self._connection: Any = None

    def __enter__(self) -> AdvisoryLock:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(
                self.url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
            )
        connection = self._engine.connect()
        try:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            connection.commit()
        except BaseException:
            connection.close()  # closing the session releases the lock, should it have been granted
            raise
        self._connection = connection
        return self

    def __exit__(self, *exc_info: object) -> None:
        import sqlalchemy

        connection, self._connection = self._connection, None
        try:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        finally:
            connection.close()
