"""``kennel data check``: each finding on a planted bad file, through the CLI, with its code, severity and exit."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from helpers import encode, kennel
from PIL import Image

from kennel.data.check import check_dataset
from kennel.data.inspection import inspect_file
from kennel.data.near_duplicates import near_duplicate_clusters
from kennel.data.sample import write_sample_dataset

A, B = "001.Synthetic_a", "002.Synthetic_b"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """24 clean 72-px images (above the tiny threshold): 3 classes, 4/2/2 per class."""
    return write_sample_dataset(tmp_path / "ds", num_classes=3, per_split=(4, 2, 2), size=72)


def first(root: Path, split: str = "train", folder: str = A) -> Path:
    return sorted((root / split / folder).iterdir())[0]


def image(mode: str, size: int = 72) -> Image.Image:
    rng = np.random.default_rng(len(mode) + size)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode)


def truncate(root: Path) -> Path:
    data = first(root).read_bytes()
    path = root / "train" / A / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def save(rel: str, picture: Callable[[], Image.Image], **options: object) -> Callable[[Path], Path]:
    def plant(root: Path) -> Path:
        picture().save(root / rel, **options)
        return root / rel

    return plant


def write_bytes(rel: str, data: bytes) -> Callable[[Path], Path]:
    def plant(root: Path) -> Path:
        (root / rel).write_bytes(data)
        return root / rel

    return plant


def copy_to(rel: str) -> Callable[[Path], Path]:
    def plant(root: Path) -> Path:
        return Path(shutil.copy(first(root), root / rel))

    return plant


def resized_copy_to(rel: str) -> Callable[[Path], Path]:
    def plant(root: Path) -> Path:
        Image.open(first(root)).resize((100, 100)).save(root / rel, quality=80)
        return root / rel

    return plant


def remove(rel: str) -> Callable[[Path], Path]:
    def plant(root: Path) -> Path:
        shutil.rmtree(root / rel)
        return root / rel

    return plant


def thin_class(root: Path) -> Path:
    """Leave train/001 with 1 image while the others keep 4 (ratio 4 > --imbalance 2 below)."""
    for path in sorted((root / "train" / A).iterdir())[1:]:
        path.unlink()
    return root / "train" / A


def png_bytes(mode: str) -> bytes:
    return encode(image(mode), "PNG")


def sixteen_bit(root: Path) -> Path:
    path = root / "train" / A / "deep.png"
    Image.fromarray(np.arange(72 * 72, dtype=np.uint16).reshape(72, 72) * 9).save(path)
    return path


def empty_class(root: Path) -> Path:
    for split in ("train", "valid", "test"):
        (root / split / "004.Synthetic_d").mkdir()
    write_sample_dataset(root / "extra", num_classes=4, per_split=(1, 1, 0), size=72)
    for split in ("train", "valid"):
        shutil.copytree(
            root / "extra" / split / "004.Synthetic_d", root / split / "004.Synthetic_d", dirs_exist_ok=True
        )
    shutil.rmtree(root / "extra")
    return root / "test" / "004.Synthetic_d"


CASES = {
    "truncated jpeg": (truncate, "truncated-image", "error"),
    "random bytes named .jpg": (
        write_bytes(f"train/{A}/noise.jpg", bytes(range(256)) * 8),
        "unreadable-image",
        "error",
    ),
    "empty file": (write_bytes(f"valid/{A}/empty.jpg", b""), "unreadable-image", "error"),
    "png under .jpg": (write_bytes(f"train/{A}/really_png.jpg", png_bytes("RGB")), "format-mismatch", "warning"),
    "grayscale": (save(f"train/{A}/grey.jpg", lambda: image("L")), "grayscale-image", "warning"),
    "cmyk": (save(f"train/{A}/print.jpg", lambda: image("CMYK")), "cmyk-image", "warning"),
    "rgba png": (save(f"train/{A}/alpha.png", lambda: image("RGBA")), "alpha-image", "warning"),
    "palette png": (save(f"train/{A}/indexed.png", lambda: image("P")), "palette-image", "warning"),
    "16-bit png": (sixteen_bit, "high-bit-depth-image", "warning"),
    "tiny image": (save(f"train/{A}/tiny.jpg", lambda: image("RGB", 20)), "tiny-image", "warning"),
    "duplicate in class": (copy_to(f"train/{A}/copy.jpg"), "duplicate-in-class", "warning"),
    "duplicate across classes": (copy_to(f"train/{B}/copy.jpg"), "duplicate-across-classes", "warning"),
    "duplicate across splits": (copy_to(f"test/{A}/copy.jpg"), "duplicate-across-splits", "error"),
    "near-duplicate across splits": (resized_copy_to(f"valid/{A}/big.jpg"), "near-duplicate-across-splits", "warning"),
    "missing split": (remove("test"), "missing-split", "error"),
    "mismatched classes": (remove(f"valid/{B}"), "class-mismatch", "error"),
    "stray file": (write_bytes(f"train/{A}/notes.txt", b"hello"), "stray-file", "warning"),
    "empty class": (empty_class, "empty-class", "warning"),
    "imbalance": (thin_class, "class-imbalance", "warning"),
}


def run_check(root: Path, *args: str):
    return kennel("data", "check", root, *args)


@pytest.mark.parametrize("case", list(CASES))
def test_planted_problem_is_found(dataset: Path, case: str) -> None:
    plant, code, severity = CASES[case]
    planted = plant(dataset).relative_to(dataset).as_posix()
    result = run_check(dataset, "--json", "--imbalance", "2")
    assert result.exit_code == (1 if severity == "error" else 0), result.output
    report = json.loads(result.stdout)
    matches = [f for f in report["findings"] if f["code"] == code]
    assert matches, f"no {code} among {[f['code'] for f in report['findings']]}"
    assert {f["severity"] for f in matches} == {severity}
    assert any(planted in path.rstrip("/") or path.rstrip("/") in planted for f in matches for path in f["files"])
    assert all(f["message"] for f in matches)
    if severity == "warning":
        assert report["ok"] and report["summary"]["error"] == 0


def test_clean_dataset_has_no_errors_or_warnings(dataset: Path) -> None:
    report = check_dataset(dataset, workers=1)
    assert report.ok and not report.warnings, [f.to_dict() for f in report.findings]
    assert report.split_totals() == {"train": 12, "valid": 6, "test": 6}
    assert report.counts["train"][A] == 4
    assert report.to_dict()["classes"][0] == {
        "folder": A,
        "name": "Synthetic a",
        "counts": {"train": 4, "valid": 2, "test": 2},
    }


def test_default_sample_only_warns_about_size(tmp_path: Path) -> None:
    report = check_dataset(write_sample_dataset(tmp_path / "ds"), workers=1)
    assert {f.code for f in report.warnings} == {"tiny-image"}
    assert report.ok


def test_tiny_threshold_is_an_option(dataset: Path) -> None:
    assert run_check(dataset, "--json", "--tiny-px", "100").exit_code == 0
    codes = [f["code"] for f in json.loads(run_check(dataset, "--json", "--tiny-px", "100").stdout)["findings"]]
    assert "tiny-image" in codes


def test_duplicate_groups_are_not_also_near_duplicates(dataset: Path) -> None:
    copy_to(f"test/{A}/copy.jpg")(dataset)
    codes = [f.code for f in check_dataset(dataset, workers=1).findings]
    assert codes.count("duplicate-across-splits") == 1
    assert not [c for c in codes if c.startswith("near-duplicate")]


def test_human_report_shows_breed_names_and_fails_on_errors(dataset: Path) -> None:
    truncate(dataset)
    result = run_check(dataset)
    assert result.exit_code == 1
    assert "Synthetic a" in result.output and "ERRORS (1)" in result.output and "truncated-image" in result.output
    assert "FAILED" in result.output


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    result = run_check(tmp_path / "nowhere", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["findings"][0]["code"] == "missing-root"


def test_process_pool_matches_inline(tmp_path: Path) -> None:
    root = write_sample_dataset(tmp_path / "ds", num_classes=4, per_split=(12, 4, 4), size=72)
    truncate(root)
    copy_to(f"test/{A}/copy.jpg")(root)
    seen: list[int] = []
    pooled = check_dataset(root, workers=2, on_progress=lambda done, total: seen.append(total))
    inline = check_dataset(root, workers=1)
    assert pooled.files_checked == 82 and seen == [82] * 82
    assert [f.to_dict() for f in pooled.findings] == [f.to_dict() for f in inline.findings]


def test_near_duplicate_clusters_join_transitively() -> None:
    assert near_duplicate_clusters([b"\x00", b"\x01", b"\x07", b"\xff"], max_bits=2) == [[0, 1, 2]]
    assert near_duplicate_clusters([b"\x00" * 32, b"\xff" * 32]) == []
    assert near_duplicate_clusters([]) == []


@pytest.mark.integration
def test_dogs10_findings() -> None:
    report = check_dataset(shared_data("dogs10"))
    assert report.ok
    assert report.split_totals() == {"train": 3052, "valid": 631, "test": 664}
    codes = {f.code: f for f in report.findings}
    assert len(codes["format-mismatch"].files) >= 30 and "PNG" in codes["format-mismatch"].message
    assert "near-duplicate-across-splits" in codes


def test_unreadable_file_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    info = inspect_file(str(tmp_path / "vanished.jpg"))  # e.g. deleted or unreadable between scan and decode
    assert info.error and "cannot read" in info.error and info.sha256 == ""
