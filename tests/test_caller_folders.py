"""The check conftest.py makes at the end of every session: a snapshot of the caller's kennel folders names what a
test wrote there (new, changed, removed, or a folder created), and the session's own environment never names them."""

from __future__ import annotations

import os
from pathlib import Path

from caller_folders import FolderSnapshot, caller_folders


def test_a_snapshot_names_every_file_written_changed_or_removed_and_a_folder_created(tmp_path: Path) -> None:
    cache, home = tmp_path / "cache", tmp_path / "home"
    (cache / "engine").mkdir(parents=True)
    (cache / "engine" / "exports.json").write_text("{}")
    (cache / "fingerprints.sqlite").write_text("rows")
    snapshot = FolderSnapshot([cache, home])
    assert snapshot.changes() == []
    (cache / "engine" / "choices.json").write_text('{"tiny@32": {}}')
    (cache / "fingerprints.sqlite").write_text("more rows")
    (cache / "engine" / "exports.json").unlink()
    home.mkdir()
    assert snapshot.changes() == [
        f"{cache / 'engine' / 'choices.json'} (new)",
        f"{cache / 'fingerprints.sqlite'} (changed)",
        f"{cache / 'engine' / 'exports.json'} (removed)",
        f"{home} (created)",
    ]


def test_the_callers_folders_include_the_defaults_a_process_without_the_variables_writes_to(tmp_path: Path) -> None:
    folders = caller_folders({"KENNEL_HOME": str(tmp_path / "h"), "KENNEL_CACHE": str(tmp_path / "c")})
    assert folders[:2] == [tmp_path / "h", tmp_path / "c"]
    assert Path.home() / ".kennel" in folders and Path.home() / ".cache" / "kennel" in folders


def test_no_test_sees_the_callers_folders(kennel_home: Path) -> None:
    callers = caller_folders({})
    assert Path(os.environ["KENNEL_HOME"]) == kennel_home and Path(os.environ["KENNEL_HOME"]) not in callers
    assert Path(os.environ["KENNEL_CACHE"]) == kennel_home / "cache"
