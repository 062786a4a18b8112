"""The synthetic sample dataset: layout, determinism, and a signal a tiny model can learn."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from helpers import kennel
from PIL import Image

from kennel.data.layout import load_layout, readable_name
from kennel.data.sample import class_folder, write_sample_dataset


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.jpg")}


def test_layout_counts_and_names(tmp_path: Path) -> None:
    root = write_sample_dataset(tmp_path / "ds", num_classes=4, per_split=(5, 2, 3), size=32)
    layout = load_layout(root)
    assert layout.classes == tuple(class_folder(i) for i in range(4))
    assert layout.class_names == ["Synthetic a", "Synthetic b", "Synthetic c", "Synthetic d"]
    assert [len(layout[s]) for s in ("train", "valid", "test")] == [20, 8, 12]
    with Image.open(layout["train"].files[0][0]) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (32, 32)


def test_class_folder_names_beyond_26() -> None:
    assert class_folder(0) == "001.Synthetic_a"
    assert class_folder(26) == "027.Synthetic_ba"
    assert readable_name(class_folder(2)) == "Synthetic c"


def test_deterministic_and_no_duplicates(tmp_path: Path) -> None:
    first = _digests(write_sample_dataset(tmp_path / "a", seed=3))
    second = _digests(write_sample_dataset(tmp_path / "b", seed=3))
    other = _digests(write_sample_dataset(tmp_path / "c", seed=4))
    assert first == second
    assert first != other
    assert len(set(first.values())) == len(first), "two files are byte-identical"


def test_classes_are_separable_by_mean_colour(tmp_path: Path) -> None:
    """Nearest class-mean colour (fitted on train) classifies the test split: a minimal learnability signal."""
    layout = load_layout(write_sample_dataset(tmp_path / "ds", num_classes=5, per_split=(10, 4, 6)))

    def mean_colour(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).mean(axis=(0, 1))

    train = [(mean_colour(p), label) for p, label in layout["train"].files]
    centroids = np.stack([np.mean([x for x, y in train if y == c], axis=0) for c in range(5)])
    gaps = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)[~np.eye(5, dtype=bool)]
    assert gaps.min() > 20, "class-mean colours are too close"
    hits = [np.argmin(np.linalg.norm(centroids - mean_colour(p), axis=1)) == y for p, y in layout["test"].files]
    assert np.mean(hits) >= 0.9


def test_images_vary_within_a_class(tmp_path: Path) -> None:
    layout = load_layout(write_sample_dataset(tmp_path / "ds", num_classes=1, per_split=(4, 1, 1)))
    arrays = [np.asarray(Image.open(p), dtype=np.float32) for p, _ in layout["train"].files]
    assert min(np.abs(a - b).mean() for a in arrays for b in arrays if a is not b) > 5


def test_cli_sample(tmp_path: Path) -> None:
    result = kennel("data", "sample", tmp_path / "ds", "--classes", "2", "--per-split", "3,1,1")
    assert result.exit_code == 0, result.output
    assert "10 images" in result.output
    assert len(load_layout(tmp_path / "ds")["train"]) == 6
    bad = kennel("data", "sample", tmp_path / "x", "--per-split", "1,2")
    assert bad.exit_code != 0
