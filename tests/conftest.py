"""Shared fixtures: an isolated kennel home, tiny generated datasets (never the real photos), and the real
servers of :mod:`servers`."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import mlflow_server, postgres_url  # noqa: F401  (real servers, started once per session)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def kennel_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $KENNEL_HOME and cache, so nothing leaks between tests or into ~/.kennel."""
    home = tmp_path_factory.mktemp("kennel-home")
    monkeypatch.setenv("KENNEL_HOME", str(home))
    monkeypatch.setenv("KENNEL_CACHE", str(home / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KENNEL_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated dataset (3 classes, 12/6/6 photos per class), one per test module."""
    from kennel.data.sample import write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("data") / "sample", num_classes=3, per_split=(12, 6, 6))


def shared_data(name: str) -> Path:
    """A folder of real photos from ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real-photo set {path} is absent (it lives in ../shared/data beside the repository)")
    return path
