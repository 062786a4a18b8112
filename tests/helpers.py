"""What many test modules need alike: the command line run in-process, a tiny training config, a tiny model and
its artifact, a search-space file, encoded photos, a report's section statuses, and a wait on a condition instead
of on the clock."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from click.testing import Result
    from PIL import Image

    from kennel.config import TrainConfig
    from kennel.models import Classifier

# A job that trains in seconds: the tiny backbone from scratch, nothing sent to MLflow, no ONNX export.
TINY = {"model.backbone": "tiny", "model.pretrained": False, "tracking": False, "export_onnx": False}
# The base URL for a TestClient of the endpoint: a loopback server answers only Host names of loopback.
LOOPBACK = "http://127.0.0.1:8080"
# The classes of the shared ``artifact_dir`` fixture (conftest.py).
ARTIFACT_CLASSES = ["Akita", "Beagle", "Boxer", "Collie", "Dachshund", "Pug"]


def kennel(*args: object) -> Result:
    """``kennel ARGS`` run in this process; paths and numbers may be passed as they are."""
    from typer.testing import CliRunner

    from kennel.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point kennel's home and cache at ``home``, with no tracking server from the environment."""
    monkeypatch.setenv("KENNEL_HOME", str(home))
    monkeypatch.setenv("KENNEL_CACHE", str(home / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KENNEL_TRACKING_URI", raising=False)


def tiny_config(dataset: Path, **overrides: Any) -> TrainConfig:
    """The :data:`TINY` job on ``dataset``; ``overrides`` are dotted keys, as ``--set`` takes them."""
    from kennel.config import load_config

    return load_config(overrides={**TINY, "data.root": str(dataset), **overrides})


def sample_with_mistakes(folder: Path) -> Path:
    """A generated dataset of 3 classes in ``folder``/sample whose first two test classes are swapped, so that a
    job on it has mistakes for sure (a report's gallery to show)."""
    from kennel.data.sample import write_sample_dataset

    data = write_sample_dataset(folder / "sample", num_classes=3, per_split=(12, 6, 6))
    first, second = sorted((data / "test").iterdir())[:2]
    first.rename(folder / "aside")
    second.rename(first)
    (folder / "aside").rename(second)
    return data


def tiny_model(num_classes: int, seed: int = 0, head_scale: float | None = None) -> Classifier:
    """The tiny backbone, randomly initialised from ``seed``. ``head_scale`` multiplies the last layer's weights,
    so that the probabilities differ clearly between classes."""
    import torch

    from kennel.models import create_model

    torch.manual_seed(seed)
    model = create_model("tiny", num_classes, pretrained=False)
    if head_scale is not None:
        with torch.no_grad():
            model.head[-1].weight.mul_(head_scale)
    return model


def tiny_artifact(
    folder: Path, classes: Sequence[str], seed: int = 0, head_scale: float | None = None, **options: Any
) -> Path:
    """A :func:`tiny_model` for ``classes`` saved as an artifact in ``folder``; ``options`` go to
    ``save_artifact`` (``export_onnx``, ``metrics``, ...)."""
    from kennel.artifact import save_artifact
    from kennel.models import get_backbone

    model = tiny_model(len(classes), seed, head_scale)
    return save_artifact(model, list(classes), get_backbone("tiny").preprocessing, folder, **options)


def space_file(path: Path, space: dict[str, Any]) -> Path:
    """``space`` (``{"parameters": {...}}``) written as the search-space YAML file ``path``."""
    import yaml

    path.write_text(yaml.safe_dump(space))
    return path


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    """The bytes of ``image`` saved as ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def section_statuses(html: str) -> dict[str, str]:
    """Each ``<section>`` of a report page by id, with its ``data-status``, in page order."""
    return dict(re.findall(r'<section id="([\w-]+)" data-status="(\w+)"', html))


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30, every: float = 0.01) -> None:
    """Return once ``condition()`` holds; raise AssertionError saying ``what`` did not happen if it still does
    not after ``timeout`` seconds. The timeout only bounds a broken run: tests assert on the state, not on the
    time. An AssertionError, not ``pytest.fail``, so that code calling back into a test from its own thread
    (a model run by the batcher) treats it as the failure of that call."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(every)


@contextmanager
def asking_meanwhile(ask: Callable[[], Any], threads: int = 3) -> Iterator[list[Any]]:
    """``threads`` clients calling ``ask`` over and over while the block runs; yields their answers as they come
    (a list that grows), and returns once every client has its last answer."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop, answers = threading.Event(), []

    def keep_asking() -> None:
        while not stop.is_set():
            answers.append(ask())

    with ThreadPoolExecutor(threads) as pool:
        clients = [pool.submit(keep_asking) for _ in range(threads)]
        try:
            yield answers
        finally:
            stop.set()
            for client in clients:
                client.result(30)
