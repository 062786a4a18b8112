"""The remembered split fingerprint: equal to the full-read one, and it reads only new or changed photos."""

from __future__ import annotations

import builtins
import hashlib
import io
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kennel.data import fingerprint
from kennel.data.fingerprint import DigestStore, split_fingerprint
from kennel.data.layout import Split, load_layout
from kennel.home import cache_dir


def reference(split: Split) -> str:
    """The fingerprint as kennel.features computed it before the store: every file's bytes, every time."""
    digest = hashlib.blake2b(digest_size=16)
    for path, label in split.files:
        digest.update(f"{path.relative_to(split.root)}\0{label}\0".encode())
        digest.update(hashlib.blake2b(path.read_bytes(), digest_size=16).digest())
    return digest.hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """ROOT/{train,valid,test}/{a,b}/N.jpg, a few bytes each (the fingerprint never decodes them)."""
    for split in ("train", "valid", "test"):
        for cls in ("a", "b"):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"{i}.jpg").write_bytes(f"{split}/{cls}/{i}".encode())
    return tmp_path / "data"


@pytest.fixture
def reads(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every opening of a file under ``root`` (pathlib's read_bytes and open go through io.open)."""
    opened: list[str] = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and str(Path(file).resolve()).startswith(str(root.resolve())):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    return opened


def train(root: Path) -> Split:
    return load_layout(root)["train"]


def test_equals_the_full_read_fingerprint(root: Path) -> None:
    for split in load_layout(root).splits.values():
        assert split_fingerprint(split) == reference(split)
        assert split_fingerprint(split) == reference(split)  # from the store this time


def test_warm_call_opens_no_photo_and_a_changed_one_is_read_once(root: Path, reads: list[str]) -> None:
    split = train(root)
    cold = split_fingerprint(split)
    assert len(reads) == len(split) == 6
    reads.clear()
    assert split_fingerprint(split) == cold
    assert reads == []

    photo = split.files[2][0]
    before = photo.stat()
    photo.write_bytes(b"X" * before.st_size)  # same size: only the mtime tells
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    reads.clear()  # the write itself
    edited = split_fingerprint(split)
    assert reads == [str(photo)]
    assert edited != cold
    reads.clear()
    assert split_fingerprint(split) == edited == reference(split)
    reads.clear()

    stamp = photo.stat().st_mtime_ns
    photo.write_bytes(b"longer than before")
    os.utime(photo, ns=(stamp, stamp))  # same mtime: only the size tells
    reads.clear()
    grown = split_fingerprint(split)
    assert reads == [str(photo)]
    assert grown not in (cold, edited)


def test_rename_relabel_and_addition_change_it(root: Path) -> None:
    split = train(root)
    base = split_fingerprint(split)

    relabelled = Split(split.name, split.root, split.classes, ((split.files[0][0], 1), *split.files[1:]))
    assert split_fingerprint(relabelled) != base
    assert split_fingerprint(relabelled) == reference(relabelled)

    split.files[0][0].rename(root / "train" / "a" / "renamed.jpg")
    renamed = train(root)
    assert split_fingerprint(renamed) != base
    assert split_fingerprint(renamed) == reference(renamed)

    (root / "train" / "b" / "new.jpg").write_bytes(b"new")
    added = train(root)
    assert len(added) == len(split) + 1
    assert split_fingerprint(added) not in (base, split_fingerprint(renamed))
    assert split_fingerprint(added) == reference(added)


def test_corrupt_database_is_recreated(root: Path, reads: list[str], caplog: pytest.LogCaptureFixture) -> None:
    split = train(root)
    database = cache_dir() / fingerprint.FILENAME
    database.parent.mkdir(parents=True)
    database.write_bytes(b"not a database at all " * 200)
    with caplog.at_level(logging.WARNING, logger=fingerprint.__name__):
        assert split_fingerprint(split) == reference(split)
    assert "recreating" in caplog.text
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM digests").fetchone() == (len(split),)
    reads.clear()
    assert split_fingerprint(split) == reference(split)
    assert len(reads) == len(split)  # only the reference read them


def test_unusable_database_falls_back_and_warns_once(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fingerprint, "_warned", set())
    (tmp_path / "blocker").write_text("a file where the cache folder should be")
    store = DigestStore(tmp_path / "blocker" / "fingerprints.sqlite")
    split = train(root)
    with caplog.at_level(logging.WARNING, logger=fingerprint.__name__):
        assert split_fingerprint(split, store) == reference(split)
        assert split_fingerprint(split, store) == reference(split)
    assert caplog.text.count("hashing photos without it") == 1


def test_threads_at_once_agree(root: Path) -> None:
    splits = list(load_layout(root).splits.values())
    expected = [reference(s) for s in splits]
    start = threading.Barrier(8)
    results: list[list[str]] = []

    def work() -> None:
        start.wait()
        results.append([split_fingerprint(s) for s in splits])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 8


def test_processes_at_once_agree(root: Path) -> None:
    code = (
        "import sys; from kennel.data.layout import load_layout; from kennel.data.fingerprint import split_fingerprint;"
        "print(*(split_fingerprint(s) for s in load_layout(sys.argv[1]).splits.values()))"
    )
    expected = " ".join(reference(s) for s in load_layout(root).splits.values())
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    outputs = [worker.communicate(timeout=60)[0].strip() for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4
    assert outputs == [expected] * 4
    with sqlite3.connect(cache_dir() / fingerprint.FILENAME) as db:
        assert db.execute("SELECT count(*) FROM digests").fetchone() == (18,)


def test_symlinks_are_keyed_by_their_target(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "target.jpg").write_bytes(b"linked photo")
    (root / "train" / "a" / "link.jpg").symlink_to(elsewhere / "target.jpg")
    (tmp_path / "alias").symlink_to(root)  # the same dataset through a linked folder
    split = train(tmp_path / "alias")
    assert split_fingerprint(split) == reference(split)
    with sqlite3.connect(cache_dir() / fingerprint.FILENAME) as db:
        stored = {row[0] for row in db.execute("SELECT path FROM digests")}
    assert stored == {os.path.realpath(path) for path, _ in split.files}
    assert str((elsewhere / "target.jpg").resolve()) in stored


def test_a_datasets_fingerprint_changes_with_any_split_and_a_job_records_it(root: Path, dataset: Path) -> None:
    from helpers import tiny_config

    from kennel.data.fingerprint import dataset_fingerprint
    from kennel.job import train as train_job

    before = dataset_fingerprint(load_layout(root))
    assert before == dataset_fingerprint(load_layout(root)) and len(before) == 32
    (root / "test" / "b" / "0.jpg").write_bytes(b"another photo")  # the test split alone
    assert dataset_fingerprint(load_layout(root)) != before
    record = train_job(tiny_config(dataset, epochs=1), stream=None)
    assert record.data_fingerprint == dataset_fingerprint(load_layout(dataset))
