"""``kennel ui``: the MLflow tracking UI over kennel's store, so jobs show in a browser like a SageMaker console."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import typer

from kennel.cli.app import app
from kennel.errors import Failure, UsageError
from kennel.mlflow_store import DEFAULT_EXPERIMENT

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def server_command(
    host: str = "127.0.0.1",
    port: int = 5000,
    tracking_uri: str | None = None,
    workers: int = 1,
    allowed_hosts: str | None = None,
    artifacts: Path | None = None,
) -> list[str]:
    """The ``mlflow server`` command line for kennel's store (or ``tracking_uri``'s).

    Runs are logged with their own artifact locations (beside the SQLite store, see
    ``kennel.mlflow_store.artifact_location``), which the server reads directly; experiments created from
    the UI keep theirs under ``$KENNEL_HOME/mlartifacts`` too instead of ``./mlartifacts`` of the current folder.
    Runs that machines log through the server (``--tracking-uri http://...``) keep their artifacts under
    ``artifacts`` (default ``$KENNEL_HOME/mlartifacts``), which the server serves as ``mlflow-artifacts:``.
    One worker is plenty for one person and spares a small machine's cores.
    """
    from kennel.home import kennel_home
    from kennel.home import tracking_uri as default_uri

    artifacts = artifacts or kennel_home() / "mlartifacts"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri or default_uri(),
        "--artifacts-destination",
        str(artifacts),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    return command


def server_env() -> dict[str, str]:
    """The server's environment. MLflow 3 also starts a job runner with about eight Huey worker processes for
    its GenAI features; kennel uses none of them, and they would take a small machine's cores. Its telemetry is
    off (and the UI's banner about it gone) unless the person has set MLflow's telemetry variables."""
    from kennel.mlflow_store import without_telemetry

    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return dict(without_telemetry(env))


def experiment_page(name: str, uri: str) -> str:
    """The UI's path to the runs of experiment ``name``. MLflow 3 opens on a welcome page about its GenAI features
    (with a banner about telemetry), and an experiment's page shows its traces unless asked for the model training
    view, which lists the runs. kennel's own experiment is created when the store has none yet; another name must
    exist (a study's trials are in the experiment named after the study)."""
    from kennel.mlflow_store import experiment_names, find_experiment, init_store

    try:
        found = init_store(name, uri) if name == DEFAULT_EXPERIMENT else find_experiment(name, uri)
        known = experiment_names(uri) if found is None else []
    except Exception as exc:  # a database that cannot be reached or read: the server would fail on it too
        raise Failure(f"cannot open the tracking store {uri}: {type(exc).__name__}: {exc}") from None
    if found is None:
        raise UsageError(
            f"no experiment {name!r} in {uri} (it has: {', '.join(known) or 'none'}); a study's trials are in the "
            "experiment of the study's name (kennel jobs studies lists them)"
        )
    return f"#/experiments/{found}?workflowType=machine_learning"


@app.command("ui")
def ui_command(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to bind; 0.0.0.0 exposes it to the network"),
    port: int = typer.Option(5000, "--port", "-p", help="port to listen on"),
    allowed_hosts: str | None = typer.Option(
        None,
        "--allowed-hosts",
        help="Host headers to accept when reached by a name other than localhost or a private IP, e.g. 'box.lan:5000'",
    ),
    workers: int = typer.Option(1, "--workers", help="server worker processes"),
    experiment: str = typer.Option(
        DEFAULT_EXPERIMENT,
        "--experiment",
        "-e",
        help="the experiment whose runs the printed address opens: kennel (the jobs) or a study's name (its trials)",
    ),
    tracking_uri_flag: str = typer.Option(
        None,
        "--tracking-uri",
        help="the store to serve, a database such as postgresql://... "
        "(default: $KENNEL_TRACKING_URI, else $MLFLOW_TRACKING_URI, else SQLite in $KENNEL_HOME)",
    ),
) -> None:
    """Serve the MLflow UI over kennel's tracking store (every job and tuning study); Ctrl-C stops it. The address
    it prints opens on the runs of experiment kennel, or of --experiment.

    With --host 0.0.0.0 it is a team's tracking server: other machines record in it with
    `--tracking-uri http://THIS-MACHINE:5000` (or KENNEL_TRACKING_URI), their files kept in $KENNEL_HOME/mlartifacts.
    """
    from kennel.home import kennel_home, tracking_uri, use_tracking_uri

    if not _has_mlflow():
        raise Failure("mlflow is not installed (pip install mlflow)")
    use_tracking_uri(tracking_uri_flag)
    if tracking_uri().startswith(("http://", "https://")):
        raise UsageError(
            f"{tracking_uri()} is a tracking server already (open it in a browser); "
            "kennel ui serves a store: SQLite, or a database URL such as postgresql://..."
        )
    (kennel_home() / "mlartifacts").mkdir(parents=True, exist_ok=True)
    page = experiment_page(experiment, tracking_uri())
    command = server_command(host, port, workers=workers, allowed_hosts=allowed_hosts)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    typer.echo(
        f"kennel UI: http://{shown}:{port}/{page}  (experiment {experiment}, store {tracking_uri()}; Ctrl-C stops it)"
    )
    if host not in LOCAL_HOSTS:
        typer.echo(f"listening on {host}: anyone who can reach this machine can read and change the runs")
    # Its own process group: mlflow starts uvicorn workers, and stopping kennel must stop all of them.
    process = subprocess.Popen(command, env=server_env(), start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        stop_server(process)
        code = 0
    if code:
        raise Failure(f"mlflow server exited with status {code}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_server(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop the server's whole process group: politely, then for good."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def _has_mlflow() -> bool:
    from importlib.util import find_spec

    return find_spec("mlflow") is not None
