"""Shared fixtures: an isolated kennel home, tiny generated datasets (never the real photos), a tiny model
artifact, and the real servers of :mod:`servers`. Plain helpers live in :mod:`helpers`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import ARTIFACT_CLASSES, tiny_artifact, use_home
from servers import mlflow_server, postgres_url  # noqa: F401  (real servers, started once per session)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n N`` (``make test``) each worker keeps to its share of the cores, and so do the processes
    its tests start: N workers each running every core's worth of threads would spend the time swapping them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from kennel.inference.machine import cores

        threads = max(1, cores() // workers)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def kennel_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $KENNEL_HOME and cache, so nothing leaks between tests or into ~/.kennel."""
    home = tmp_path_factory.mktemp("kennel-home")
    use_home(monkeypatch, home)
    return home


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated dataset (3 classes, 12/6/6 photos per class), one per test module."""
    from kennel.data.sample import write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("data") / "sample", num_classes=3, per_split=(12, 6, 6))


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model for :data:`helpers.ARTIFACT_CLASSES`, with its ONNX export and a sharpened head, saved once
    for the session (an export takes seconds); tests read it and never write into it."""
    return tiny_artifact(tmp_path_factory.mktemp("artifact") / "model", ARTIFACT_CLASSES, head_scale=20)


@pytest.fixture(scope="session")
def _photo_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Under pytest -n, one folder for every worker of the run (the parent of the workers' own temporary folders):
    # the cache locks what it builds, as parallel tuning trials sharing it need, so a worker waits for features or
    # a backbone's figures that another is computing, and reads them.
    root = tmp_path_factory.getbasetemp()
    folder = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "photo-cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def photo_cache(_photo_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One feature cache for every test on real photos in the run: features are keyed by the photos' content,
    the backbone, its weights and the engine, so a test that needs the same features reads them instead of
    computing them again (the tests that are about a cold cache use their own)."""
    monkeypatch.setenv("KENNEL_CACHE", str(_photo_cache_dir))
    return _photo_cache_dir


def shared_data(name: str) -> Path:
    """A folder of real photos from ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real-photo set {path} is absent (it lives in ../shared/data beside the repository)")
    return path
