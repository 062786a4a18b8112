"""Where kennel keeps things: one home folder for jobs and records, one cache for downloads."""

from __future__ import annotations

import os
from pathlib import Path


def kennel_home() -> Path:
    """Jobs, studies and the tracking store live here (``$KENNEL_HOME``, default ``~/.kennel``); absolute, so the
    job and study paths kennel records and prints (a retrain command's best.yaml) work from any folder."""
    return Path(os.environ.get("KENNEL_HOME", Path.home() / ".kennel")).expanduser().absolute()


def cache_dir() -> Path:
    """Downloaded data, weights and cached features (``$KENNEL_CACHE``, default ``$XDG_CACHE_HOME/kennel``)."""
    if "KENNEL_CACHE" in os.environ:
        return Path(os.environ["KENNEL_CACHE"]).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    return Path(xdg).expanduser().absolute() / "kennel"


def jobs_dir() -> Path:
    return kennel_home() / "jobs"


def tracking_uri() -> str:
    """The MLflow store: ``$KENNEL_TRACKING_URI`` or ``$MLFLOW_TRACKING_URI`` when set (a database, or a tracking
    server's ``http://`` URL), else SQLite inside the kennel home."""
    uri = os.environ.get("KENNEL_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{kennel_home() / 'mlflow.db'}"


def use_tracking_uri(uri: str | None) -> None:
    """Record in ``uri`` from now on (``--tracking-uri``). Set in the environment, so the processes a command
    starts (tuning workers, trials) record there too."""
    if uri:
        os.environ["KENNEL_TRACKING_URI"] = uri
