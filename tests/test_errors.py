"""Expected failures end as one line and an exit code at the command line's edge, never as a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import kennel

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


def said(result) -> list[str]:
    """The lines a command wrote to stderr, after checking that none of them is a traceback."""
    assert "Traceback" not in result.output, result.output
    return result.stderr.strip().splitlines()


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
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid configuration (defaults <- flags): ")
    for problem in (
        "data.nope: unknown key",
        "epochs: Input should be greater than or equal to 1 (got 0)",
        "model.freeze: expected an integer or 'all' (got 'al'; did you mean 'all'?)",
        "optim.name: Input should be 'adamw' or 'sgd' (got 'adam'; did you mean 'adamw'?)",
    ):
        assert problem in message


def test_rules_and_studies_say_their_problems_the_same_way() -> None:
    from kennel.profiler.rules import PROFILER_RULES

    with pytest.raises(ValueError, match=r"profiler\.rules\.StepOutlier: stddev: Input should be a valid number"):
        PROFILER_RULES.build("StepOutlier", {"stddev": "lots"})


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "show", "nosuch"],
        ["debug", "nosuch"],
        ["profile", "nosuch"],
        ["report", "nosuch"],
        ["train", "--resume", "nosuch"],
        ["predict", "--model", "nosuch", "photo.jpg"],
        ["serve", "nosuch"],
    ],
)
def test_an_unknown_name_exits_2_in_every_command_with_one_line(args: list[str]) -> None:
    result = kennel(*args)
    assert result.exit_code == 2, result.output
    (line,) = said(result)
    assert line.startswith("error: ") and "'nosuch'" in line


def test_a_missing_job_to_resume_names_it(kennel_home: Path) -> None:
    result = kennel("train", "--resume", "nosuch")
    assert said(result) == [f"error: no job 'nosuch' under {kennel_home / 'jobs'} (kennel jobs lists them)"]


def test_an_unknown_config_key_is_one_line_that_names_it(tmp_path: Path) -> None:
    result = kennel("train", "--data", tmp_path, "--set", "optim.nope=1", "--print-config")
    assert result.exit_code == 2
    (line,) = said(result)
    assert line.startswith("error: invalid configuration") and line.endswith("optim.nope: unknown key")


def test_weights_that_are_not_here_offline_fail_the_job_in_one_line(dataset: Path, monkeypatch) -> None:
    from kennel.models import weights

    def offline(spec):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(weights, "available_offline", lambda spec: None)  # whatever this machine has cached
    monkeypatch.setattr(weights, "_torchvision_download", offline)
    result = kennel("train", "--data", dataset, "--model", "resnet18", "--epochs", "1", "--no-tracking")
    assert result.exit_code == 1, result.output
    errors = [line for line in said(result) if line.startswith("error:")]
    assert len(errors) == 1 and "no weights for 'resnet18' offline" in errors[0] and "--weights FILE" in errors[0]


def test_a_missing_photo_is_named_once_before_a_model_loads(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "artifact.json").write_text("{}")  # a model that would fail to load: the photo fails first
    for backend in (["--model", str(model)], ["--endpoint", "http://127.0.0.1:9"]):
        result = kennel("predict", *backend, tmp_path / "nope.jpg")
        assert result.exit_code == 1, result.output
        assert said(result) == [f"error: {tmp_path / 'nope.jpg'}: no such file or folder"]


def test_contradicting_options_exit_2() -> None:
    result = kennel("predict", "photo.jpg")
    assert result.exit_code == 2 and said(result) == [
        "error: give either --model DIR (predict here) or --endpoint URL (ask a running endpoint)"
    ]


def test_debug_errors_shows_the_traceback_an_unexpected_error_always_does(monkeypatch) -> None:
    result = kennel("--debug-errors", "jobs", "show", "nosuch")
    assert isinstance(result.exception, JobNotFound)
    monkeypatch.setenv("KENNEL_DEBUG_ERRORS", "1")
    assert isinstance(kennel("jobs", "show", "nosuch").exception, JobNotFound)
    monkeypatch.delenv("KENNEL_DEBUG_ERRORS")

    from kennel.cli import jobs

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(jobs, "list_jobs", bug)
    assert isinstance(kennel("jobs").exception, ZeroDivisionError)  # a bug is not said in a line: it is reported


def test_a_message_of_several_lines_is_printed_on_one() -> None:
    from kennel.cli.output import joined

    assert (
        joined("invalid search space (s.yaml):\n  a: bad\n  b: worse")
        == "invalid search space (s.yaml): a: bad; b: worse"
    )
    assert joined("cannot download it.\nOffline, run\n    kennel data fetch --from x.zip\nor pass --data DIR.") == (
        "cannot download it. Offline, run kennel data fetch --from x.zip or pass --data DIR."
    )
    assert joined("one line") == "one line"


def test_an_os_error_names_its_path_once() -> None:
    from kennel.errors import PathError

    error = PathError.of(PermissionError(13, "Permission denied", "/jobs/x/report.html"), "cannot write the report")
    assert str(error) == "/jobs/x/report.html: cannot write the report: permission denied" and error.exit_code == 1


def test_a_folder_that_cannot_be_written_is_one_line_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = kennel("data", "sample", blocker / "sample")
    assert result.exit_code == 1
    (line,) = said(result)
    assert line.startswith(f"error: {blocker / 'sample'}") and line.endswith(
        ": cannot write the dataset: not a directory"
    )
    assert line.count("a-file") == 1
