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


def test_a_bad_config_value_names_the_key_the_value_and_a_close_match() -> None:
    from kennel.config import load_config

    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"optim.name": "adam", "model.freeze": "al", "epochs": 0, "data.nope": 1})
    lines = str(caught.value).splitlines()[1:]
    assert sorted(lines) == [
        "  data.nope: unknown key",
        "  epochs: Input should be greater than or equal to 1 (got 0)",
        "  model.freeze: expected an integer or 'all' (got 'al'; did you mean 'all'?)",
        "  optim.name: Input should be 'adamw' or 'sgd' (got 'adam'; did you mean 'adamw'?)",
    ]


def test_rules_and_studies_say_their_problems_the_same_way() -> None:
    from kennel.profiler.rules import build_rule

    with pytest.raises(ValueError, match=r"profiler rule StepOutlier: stddev: Input should be a valid number"):
        build_rule("StepOutlier", {"stddev": "lots"})
