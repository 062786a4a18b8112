"""The MLflow store kennel records jobs in: a client that fails fast, the experiment, where artifacts go.

mlflow is imported lazily: that import alone takes one to two seconds. Every process that reaches MLflow through
kennel comes here first, so this module also turns MLflow's telemetry off before mlflow is imported.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from kennel.home import tracking_uri as default_tracking_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# Job status -> MLflow run status. "stopped" (early stopping, a rule, Ctrl-C) and "pruned" (a tuning trial a
# pruner ended early) read KILLED in the UI; the reason is in the ``kennel.stop_reason`` tag.
RUN_STATUS = {"completed": "FINISHED", "failed": "FAILED", "stopped": "KILLED", "pruned": "KILLED"}
# MLflow 3's UI shows GenAI pages (traces, prompts) unless told that an experiment trains models.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
DEFAULT_EXPERIMENT = "kennel"  # where jobs outside a study are recorded; a study's trials go in one of its name
# MLflow 3 reports usage to its makers and its UI asks about it in a banner; it reads either variable.
TELEMETRY_VARIABLES = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def without_telemetry(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``env`` with MLflow's telemetry off, unless it already says either way (the person set one of
    :data:`TELEMETRY_VARIABLES` themselves)."""
    if not any(name in env for name in TELEMETRY_VARIABLES):
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


# Now, before mlflow is imported (by this module's functions, lazily): importing it is when it decides.
without_telemetry(os.environ)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    return Path(uri[len("sqlite:///") :].split("?")[0]).expanduser().resolve()


def artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a SQLite store, artifacts go to ``<store folder>/mlartifacts/<experiment>``; MLflow's own default
    would be ``./mlruns`` under whatever folder the job was started from. Other stores decide for themselves."""
    database = _sqlite_path(uri)
    if database is None:
        return None
    folder = database.parent
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment).strip("-") or "experiment"
    return (folder / "mlartifacts" / safe).as_uri()


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """An unreachable tracking server would make MLflow retry with backoff for minutes; fail in seconds instead."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
        pass


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize opening a SQLite store across processes: parallel trials that all find a new file would each
    run MLflow's table migrations and fail with "table experiments already exists"."""
    database = _sqlite_path(uri)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, init_store() first avoids the race
        fcntl = None
    if database is None or fcntl is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_client(uri: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` on ``uri`` (default: kennel's store). Opening a new SQLite file creates its tables,
    which takes seconds; an existing one about half a second, once per process."""
    uri = uri or default_tracking_uri()
    check_reachable(uri)
    from mlflow.tracking import MlflowClient

    # MLflow's own INFO lines (creating tables, migrations) would interleave with the job's metric lines, and
    # so would its "View run ... at: URL" on stdout after every run logged through a tracking server.
    for noisy in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store (and migrates it) inside the lock
    return client


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, creating it if needed; safe when parallel trials race to create it."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri, name), tags=EXPERIMENT_TAGS)
    except Exception:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def init_store(experiment: str = DEFAULT_EXPERIMENT, uri: str | None = None) -> str:
    """Create the store and the experiment up front, e.g. in a tuner before it starts parallel workers, so the
    first trial does not pay for it (trackers also serialize this themselves). Returns the experiment id."""
    uri = uri or default_tracking_uri()
    return ensure_experiment(get_client(uri), experiment, uri)


def find_experiment(name: str, uri: str | None = None) -> str | None:
    """The id of experiment ``name`` in the store, None where it has none."""
    experiment = get_client(uri).get_experiment_by_name(name)
    return None if experiment is None else experiment.experiment_id


def experiment_names(uri: str | None = None) -> list[str]:
    """The store's experiments, by name."""
    return sorted(e.name for e in get_client(uri).search_experiments(max_results=1000))


def end_abandoned_run(run_id: str | None, reason: str, status: str = "KILLED") -> None:
    """End the run of a job whose process died (``kill -9``, a power loss) with the run still RUNNING, saying
    why in its ``kennel.stop_reason`` tag. A store that cannot be reached is logged: the job's record is the truth."""
    if not run_id:
        return
    try:
        client = get_client()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "kennel.stop_reason", reason)
            client.set_terminated(run_id, status=status)
    except Exception as exc:
        log.warning("cannot end the MLflow run %s of an abandoned job: %s", run_id, exc)
