"""Expected failures end as one line and an exit code at the command line's edge, never as a traceback."""

from __future__ import annotations

import sys

import pytest

from kennel.artifact import ArtifactError
from kennel.config import ConfigError
from kennel.data.images import ImageError
from kennel.errors import KennelError
from kennel.inference import EngineError
from kennel.jobs import JobNotFound
from kennel.tune import TuneError


@pytest.mark.parametrize("error", [ArtifactError, ConfigError, ImageError, EngineError, JobNotFound, TuneError])
def test_expected_failures_share_one_base_and_keep_their_own(error) -> None:
    assert issubclass(error, KennelError)
    assert issubclass(error, (ValueError, LookupError))  # what callers caught before still catches them


def run_main(monkeypatch, *args: str) -> int:
    from kennel.cli import main

    monkeypatch.setattr(sys, "argv", ["kennel", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code


def test_an_unhandled_expected_failure_is_one_line(monkeypatch, capsys) -> None:
    import kennel.cli.jobs

    def broken(*args, **kwargs):
        raise TuneError("the study database is locked")

    monkeypatch.setattr(kennel.cli.jobs, "list_jobs", broken)
    assert run_main(monkeypatch, "jobs") == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: the study database is locked" and "Traceback" not in err
    monkeypatch.setenv("KENNEL_DEBUG_ERRORS", "1")  # and the traceback where a person asks for it
    with pytest.raises(TuneError, match="locked"):
        run_main(monkeypatch, "jobs")
