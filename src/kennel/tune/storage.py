"""Where a study's trials live: Optuna's journal file in the study folder (many processes on one machine, no
server), or a database that several machines share (PostgreSQL). Opening a database says plainly what is wrong:
a URL that is not one, a driver that is not installed, a server that does not answer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kennel.tune.errors import TuneError

if TYPE_CHECKING:
    import optuna
    from sqlalchemy.engine import URL

JOURNAL = "journal.log"
# What `pip install` gives SQLAlchemy each driver. A plain postgresql:// URL means psycopg (3) to SQLAlchemy 2.1
# and later, psycopg2 to earlier versions: the message names the one this installation would load.
DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pg8000": "pg8000", "pymysql": "PyMySQL"}
CONNECT_TIMEOUT_S = 10  # an unreachable host would otherwise hang for the system's TCP timeout, minutes


class StorageError(TuneError):
    """A study database that cannot be used as named: a bad URL, an unknown kind, a missing driver."""


class StorageUnreachable(StorageError):
    """A study database that cannot be opened: the request was fine, the server or the database is not."""

    exit_code = 1


def normalized_url(url: str) -> str:
    """``url`` as SQLAlchemy names it: ``postgres://`` (the spelling of libpq, Heroku and many dashboards) is
    ``postgresql://``, a name SQLAlchemy dropped."""
    scheme, sep, rest = url.partition("://")
    if sep and (scheme == "postgres" or scheme.startswith("postgres+")):
        return f"postgresql{scheme.removeprefix('postgres')}://{rest}"
    return url


def parse_url(url: str) -> URL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        raise StorageError(
            f"storage {url!r} is not a database URL (expected e.g. postgresql://USER:PASSWORD@HOST/DATABASE)"
        ) from None


def shown(url: str) -> str:
    """``url`` fit for messages and logs: the password masked."""
    try:
        return parse_url(url).render_as_string(hide_password=True)
    except StorageError:
        return url


def backend(url: str) -> str:
    """``postgresql`` for ``postgresql+psycopg://...``; ``sqlite``, ``mysql``, ..."""
    return parse_url(url).get_backend_name()


def driver(url: str) -> str:
    """The Python module SQLAlchemy loads for ``url``: ``psycopg`` for ``postgresql://...``, ..."""
    from sqlalchemy.exc import NoSuchModuleError

    try:
        return parse_url(url).get_dialect().driver
    except NoSuchModuleError:
        raise StorageError(
            f"storage {shown(url)}: SQLAlchemy knows no database {parse_url(url).drivername!r} "
            "(expected e.g. postgresql://USER:PASSWORD@HOST/DATABASE)"
        ) from None


def open_journal(folder: Path) -> optuna.storages.BaseStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))


def open_database(url: str) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage on ``url``, its tables created when new. Raises :class:`StorageError`."""
    import optuna
    from sqlalchemy.exc import OperationalError

    name, module = backend(url), driver(url)  # an unknown kind of database fails here, plainly
    engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if name == "postgresql" else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except ImportError:
        install = f"pip install {DRIVERS[module]}" if module in DRIVERS else f"install the {module} module"
        extra = "; kennel's extra: pip install 'kennel[scale]'" if module == "psycopg" else ""
        message = f"storage {shown(url)}: its {name} driver {module} is not installed ({install}{extra})"
        raise StorageError(message) from None
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise StorageUnreachable(
            f"cannot open the study database {shown(url)}: {reason}. Expected a running {name} server with this "
            "database (createdb DATABASE) that lets this user in"
        ) from None
