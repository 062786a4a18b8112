"""What kennel prints while it works fits 80 columns (a terminal's width, 80 when it is none) without breaking a name
or a number: the epoch metric lines, a trial's line, a rule's finding, a warning; Click's usage errors are one error
line and the usage; no command's help shows a ``<bool>`` beside a flag."""

from __future__ import annotations

import io
import logging
import re
from itertools import pairwise

import pytest
import typer
from helpers import kennel

from kennel.findings import ISSUES_FOUND, Finding, announce, labelled
from kennel.lines import FoldingFormatter, fold_words, width
from kennel.observers.metrics_log import metric_line
from kennel.tune.objective import TrialResult
from kennel.tune.worker import describe

EPOCH = {  # the fields of an epoch line, as long as they come
    "train_loss": 0.948364,
    "train_accuracy": 0.759124,
    "lr": 0.000947368,
    "images_per_s": 1764.0123,
    "epoch_seconds": 0.0572089,
    "valid_loss": 0.40715,
    "valid_accuracy": 0.913043,
    "valid_top5": 0.995652,
}


def assert_fits(text: str, columns: int, pieces: list[str]) -> None:
    """No line of ``text`` is wider than ``columns``, and each of ``pieces`` is whole on one line."""
    lines = text.splitlines()
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    for piece in pieces:
        assert any(piece in line for line in lines), f"{piece!r} is broken across lines:\n{text}"


def test_an_epoch_line_folds_between_fields_each_still_matched_by_its_regex() -> None:
    assert width(io.StringIO()) == 80  # not a terminal
    text = metric_line("epoch 12/15", EPOCH, 80)
    fields = text.replace("\n", " ").split()
    assert_fits(text, 80, fields)
    assert len(text.splitlines()) > 1 and all(line.startswith("    ") for line in text.splitlines()[1:])
    assert text.startswith("[epoch 12/15] train_loss=0.948364")
    for name, value in EPOCH.items():
        found = re.search(rf"{name}=([0-9.eE+-]+)", text)
        assert found and float(found.group(1)) == pytest.approx(value, rel=1e-5), name
    assert text.endswith("valid_top5=0.995652;")
    assert metric_line("epoch 12/15", EPOCH) == " ".join(fields)  # no columns: one line, as before
    assert metric_line("epoch 1/3", {"valid_accuracy": 0.5}, 80) == "[epoch 1/3] valid_accuracy=0.5;"


def test_a_trial_line_folds_between_fields_and_a_short_one_stays_as_it_was() -> None:
    params = {"optim.weight_decay": 0.000123456, "optim.lr": 0.00316, "optim.label_smoothing": 0.1, "head": "lbfgs"}
    result = TrialResult(12, "pruned", 0.8125, params, 13.4, note="pruned at epoch 3 by the median pruner rule")
    text = describe(result, "valid_accuracy", None, 80)
    pieces = ["valid_accuracy=0.8125", "13.4s", "optim.weight_decay=0.000123", "optim.label_smoothing=0.1"]
    assert_fits(text, 80, [*pieces, "head=lbfgs", "optim.lr=0.00316"])
    short = describe(TrialResult(3, "complete", 0.9, {"optim.lr": 0.001}, 4.0), "valid_accuracy", None, 80)
    assert short == "trial   3 complete valid_accuracy=0.9000    4.0s  optim.lr=0.001"


def test_a_finding_folds_at_its_words(capsys) -> None:
    message = (
        "The training classes are imbalanced: 002.Siberian_husky has 12 photos against 140 for "
        "004.American_bulldog, so the model learns to say the larger classes."
    )
    with labelled("trial 4"):
        announce("debugger rule", Finding("ClassImbalance", ISSUES_FOUND, message=message))
    said = capsys.readouterr().err
    assert said.startswith("trial 4: debugger rule ClassImbalance: The training classes")
    assert_fits(said, 80, ["002.Siberian_husky", "004.American_bulldog", "ClassImbalance:"])


def test_a_warning_folds_at_its_words_and_a_path_stays_whole(capsys) -> None:
    path = "/home/someone/.kennel/jobs/20261207-195002-tf_efficientnet_lite0-tf_efficientnet_li-d6cb/model"
    logger = logging.getLogger("kennel.test-lines")
    handler = logging.StreamHandler()  # stderr as pytest captures it: not a terminal
    handler.setFormatter(FoldingFormatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        logger.warning("the ONNX export failed for %s (an operator it has no kernel for); it keeps PyTorch's", path)
    finally:
        logger.removeHandler(handler)
    said = capsys.readouterr().err
    assert said.startswith("WARNING kennel.test-lines: the ONNX export failed for")
    lines = said.splitlines()
    assert path in lines[1].strip() and all(len(line) <= 80 for line in lines if path not in line)
    assert fold_words("a short line", 80) == "a short line"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["report"], "error: missing argument"),
        (["report", "--bogus", "x"], "error: no such option: --bogus"),
        (["--bogus"], "error: no such option: --bogus"),
        (["nosuch"], "error: no such command 'nosuch'"),
        (["train", "--epochs", "many"], "error: invalid value for '--epochs'"),
        (["models", "versions"], "error: missing argument"),
    ],
)
def test_a_command_line_that_cannot_be_parsed_is_one_error_line_and_the_usage(args: list[str], error: str) -> None:
    result = kennel(*args)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(error), result.stderr
    command = " ".join(a for a in args if not a.startswith("-") and a not in ("x", "many", "nosuch"))
    assert lines[1].startswith(f"usage: kennel {command}".rstrip()), lines[1]
    assert "╭" not in result.output and "Traceback" not in result.output


def commands(command, path: tuple[str, ...] = ()):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            yield from commands(sub, (*path, name))


def test_no_help_shows_a_bool_beside_a_flag() -> None:
    from kennel.cli import kennel_app

    every = list(commands(typer.main.get_command(kennel_app)))
    assert ("train",) in every and ("models", "versions") in every and len(every) > 20
    for path in every:
        result = kennel(*path, "--help")
        assert result.exit_code == 0 and "--help" in result.output, path
        assert "<bool>" not in result.output, f"kennel {' '.join(path)} --help"


def test_no_help_cuts_a_name_or_word_at_80_columns(monkeypatch) -> None:
    from kennel.cli import kennel_app

    monkeypatch.setenv("COLUMNS", "80")
    every = list(commands(typer.main.get_command(kennel_app)))
    for path in every:
        output = kennel(*path, "--help").output
        assert max(len(line) for line in output.splitlines()) <= 80, f"kennel {' '.join(path)} --help"
        assert "…" not in output, f"kennel {' '.join(path)} --help:\n" + "\n".join(
            line for line in output.splitlines() if "…" in line
        )


def test_the_sagemaker_spellings_of_train_options_still_work() -> None:
    result = kennel("train", "--learning_rate", "0.5", "--batch_size", "7", "--print-config")
    assert result.exit_code == 0 and "lr: 0.5" in result.output and "batch_size: 7" in result.output
    result = kennel("train", "--learning-rate", "0.25", "--print-config")
    assert result.exit_code == 0 and "lr: 0.25" in result.output


def test_help_prose_is_folded_once_at_80_columns(monkeypatch) -> None:
    """A paragraph of help fills each line before the next: no word starts a line that had room for it (the
    docstrings' own line breaks, made for wider lines, left short lines behind)."""
    from kennel.cli import kennel_app

    monkeypatch.setenv("COLUMNS", "80")
    for path in commands(typer.main.get_command(kennel_app)):
        output = kennel(*path, "--help").output
        prose = [line.rstrip() for line in output[: output.find("╭")].splitlines()]
        for line, after in pairwise(prose):
            if line.strip() and after.strip() and not line.lstrip().startswith("Usage:"):
                first = after.split()[0]
                assert len(line) + 1 + len(first) > 78, f"kennel {' '.join(path)} --help: {line!r} / {after!r}"
