"""Real servers for the tests that need one, each started once per test session in a throwaway folder and
stopped at its end: a PostgreSQL cluster (tuning studies shared by several machines) and an MLflow tracking
server (jobs recorded from elsewhere). Where PostgreSQL cannot start, the tests that need it skip and say why."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kennel.localhost import free_port

PROGRAMS = ("initdb", "pg_ctl", "createdb")
SERVER_USER = "postgres"  # PostgreSQL refuses to run as root; as root, the cluster runs as this user


def postgres_bin() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``createdb`` together: that of the ``initdb`` on PATH (links
    followed), or Debian's newest ``/usr/lib/postgresql/N/bin``."""
    found = shutil.which("initdb")
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parts[-2]), reverse=True)
    candidates = [Path(found).resolve().parent] if found else []
    for folder in [*candidates, *map(Path, debian)]:
        if all((folder / program).is_file() for program in PROGRAMS):
            return folder
    return None


def _as_server_user() -> tuple[list[str], int | None]:
    """The command prefix that runs the server's programs as a user PostgreSQL accepts, and that user's uid."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError:
        pytest.skip(f"PostgreSQL refuses to run as root, and there is no {SERVER_USER!r} user to run it as")
    if shutil.which("runuser") is None:
        pytest.skip(f"PostgreSQL refuses to run as root, and runuser is missing to run it as {SERVER_USER!r}")
    return ["runuser", "-u", SERVER_USER, "--"], user.pw_uid


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"PostgreSQL could not start: {what} failed: {(done.stderr or done.stdout).strip()[-600:]}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust authentication, a free port, its own socket folder) with
    an empty database ``kennel``; its URL."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install -e '.[scale]'")
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed: no initdb, pg_ctl and createdb on PATH or under /usr/lib/postgresql/*/bin "
            "(make test installs Debian's postgresql where it can)"
        )
    prefix, uid = _as_server_user()
    folder = Path(tempfile.mkdtemp(prefix="kennel-postgres-"))  # not under pytest's tmp: the server user enters it
    if uid is not None:
        os.chown(folder, uid, -1)
    data, port = folder / "data", free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        _run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], "initdb")
        _run([*pg_ctl, "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start"], "pg_ctl start")
        _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "kennel"], "createdb")
        yield f"postgresql://postgres@127.0.0.1:{port}/kennel"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class TrackingServer:
    url: str
    artifacts: Path  # the server's --artifacts-destination


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """``mlflow server`` on 127.0.0.1 as ``kennel ui`` starts it, over a SQLite store in a throwaway folder."""
    import requests

    from kennel.cli.ui import server_command, server_env, stop_server

    folder = tmp_path_factory.mktemp("mlflow-server")
    port, artifacts = free_port(), folder / "artifacts"
    command = server_command(port=port, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", artifacts=artifacts)
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen(
            command, env=server_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not answer /health: {(folder / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.3)
        yield TrackingServer(url, artifacts)
    finally:
        stop_server(process)
