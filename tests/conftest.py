"""Shared fixtures: an isolated kennel home, tiny generated datasets (never the real photos), a tiny model
artifact, and the real servers of :mod:`servers`. Plain helpers live in :mod:`helpers`.

Tests never write into the caller's own kennel folders. Before anything imports kennel, the session's
``$KENNEL_HOME`` and ``$KENNEL_CACHE`` point at empty sentinel folders; the session's fixtures then get a home of
their own (:func:`session_home`) and every test another (:func:`kennel_home`). Anything that still reaches the
sentinels (a path computed at import, a process started with the environment of the moment before the fixtures)
would have reached the caller's folders: the session fails, naming what appeared there, and likewise for anything
that appeared in the caller's folders themselves (``$KENNEL_HOME``/``$KENNEL_CACHE`` as the caller set them, and
``~/.kennel`` and ``~/.cache/kennel``, where a process started without those variables writes)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from caller_folders import FolderSnapshot, caller_folders

HOMES = ("KENNEL_HOME", "KENNEL_CACHE")

# Under pytest-xdist the workers inherit the controller's sentinels; the controller checks them once all are done.
if "KENNEL_TEST_SENTINELS" not in os.environ:
    CALLER: FolderSnapshot | None = FolderSnapshot(caller_folders(os.environ))
    SENTINELS = {name: Path(tempfile.mkdtemp(prefix=f"kennel-sentinel-{name[7:].lower()}-")) for name in HOMES}
    os.environ.update({name: str(folder) for name, folder in SENTINELS.items()})
    os.environ["KENNEL_TEST_SENTINELS"] = os.pathsep.join(str(folder) for folder in SENTINELS.values())
else:
    CALLER, SENTINELS = None, {}

import pytest  # noqa: E402  (after the sentinels: nothing below may see the caller's folders)
from helpers import ARTIFACT_CLASSES, tiny_artifact, use_home  # noqa: E402
from servers import mlflow_server, postgres_url  # noqa: E402, F401  (real servers, started once per session)

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


LEAKS = pytest.StashKey[list]()


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down: what they do at teardown counts too
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the session when anything appeared in the sentinels or changed in the caller's folders."""
    if CALLER is None:
        return
    leaks = [f"{path} (the sentinel of ${name})" for name, folder in SENTINELS.items() for path in _entries(folder)]
    leaks += CALLER.changes()
    session.config.stash[LEAKS] = leaks
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        for folder in SENTINELS.values():
            shutil.rmtree(folder, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    leaks = config.stash.get(LEAKS, [])
    if leaks:
        terminalreporter.section("written outside the tests' own homes", red=True)
        for leak in leaks[:50]:
            terminalreporter.line(leak, red=True)
        if len(leaks) > 50:
            terminalreporter.line(f"... and {len(leaks) - 50} more", red=True)
        terminalreporter.line("(a kennel you ran yourself meanwhile writes in your folders too: then run them again)")


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.is_dir() else []


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The home and cache of the session's and the modules' fixtures (a shared model artifact, a served app, a
    module's jobs): set up before them, since pytest sets up a session's and a module's fixtures before a test's."""
    home = tmp_path_factory.mktemp("session-home")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_home(monkeypatch, home)
        yield home


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the machine quiet when the engine times its backends (other tests keep it busy under ``make
    test``, and figures timed on a busy machine are timed again at the next quiet start); a test about a busy
    machine fakes one."""
    from kennel.inference import machine

    monkeypatch.setattr(machine, "others_busy", lambda start, end=None: 0.0)


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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright, one per test module; a module that uses it carries the marks of
    :data:`chromium.NEEDS_CHROMIUM`, which skip it where either is missing."""
    from chromium import CHROMIUM
    from playwright.sync_api import sync_playwright

    from kennel.browser import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
