"""kennel's home and cache are absolute however they are given, so the paths it records and prints (a job's
folder, a study's best.yaml in a retrain command) still work from another folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from kennel.home import cache_dir, jobs_dir, kennel_home


def test_a_relative_home_and_cache_are_resolved_against_the_folder_they_were_given_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KENNEL_HOME", "runs/home")
    monkeypatch.setenv("KENNEL_CACHE", "runs/cache")
    assert kennel_home() == tmp_path / "runs" / "home" and kennel_home().is_absolute()
    assert cache_dir() == tmp_path / "runs" / "cache"
    assert jobs_dir() == tmp_path / "runs" / "home" / "jobs"
    monkeypatch.delenv("KENNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "xdg")
    assert cache_dir() == tmp_path / "xdg" / "kennel"
