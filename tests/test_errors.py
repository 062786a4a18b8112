"""Expected failures end as one line and an exit code at the command line's edge, never as a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import kennel

from kennel.artifact import ArtifactError
from kennel.config import ConfigError, load_config
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


def _no_network_for(monkeypatch, *offline: str) -> list[str]:
    """Backbones named in ``offline`` have weights here (a stand-in source: nothing loads them), the others none,
    and a download fails as without a network. Returns the backbones a download was tried for."""
    from kennel.models import weights

    tried: list[str] = []

    def download(spec):
        tried.append(spec.name)
        raise OSError("[Errno -2] Name or service not known")

    def available(spec):
        return weights.WeightsSource("package", "stand-in") if spec.name in offline else None

    monkeypatch.setattr(weights, "available_offline", available)  # whatever this machine has cached
    monkeypatch.setattr(weights, "_torchvision_download", download)
    monkeypatch.setattr(weights, "_timm_download", download)
    return tried


def _no_data_loaded(monkeypatch) -> None:
    import kennel.job.run

    def load_data(config):
        raise AssertionError("the data loaded before the weights were checked")

    monkeypatch.setattr(kennel.job.run, "load_data", load_data)


@pytest.mark.parametrize(
    ("backbone", "offline", "message"),
    [
        ("resnet18", (), "no weights for 'resnet18' offline and the download failed"),
        (
            "tf_efficientnet_lite0+resnet18",
            ("tf_efficientnet_lite0",),
            "no weights for 'resnet18' (in 'tf_efficientnet_lite0+resnet18') offline and the download failed",
        ),
    ],
)
def test_weights_that_cannot_be_had_fail_in_one_line_before_a_job_exists(
    dataset: Path, kennel_home: Path, monkeypatch, backbone: str, offline: tuple[str, ...], message: str
) -> None:
    tried = _no_network_for(monkeypatch, *offline)
    _no_data_loaded(monkeypatch)
    result = kennel("train", "--data", dataset, "--model", backbone, "--epochs", "1", "--no-tracking")
    assert result.exit_code == 2, result.output
    (line,) = said(result)
    assert line.startswith(f"error: {message}") and "resnet18-f37072fd.pth elsewhere and copy it to" in line
    assert ("--weights FILE" in line) == ("+" not in backbone)  # a fused backbone takes no weights file
    assert tried == ["resnet18"]  # the download was tried: online, it would have fetched them
    assert not list((kennel_home / "jobs").glob("*"))  # and no job was left behind


def test_weights_a_machine_online_lacks_are_downloaded_before_the_job_into_the_cache(tmp_path: Path, monkeypatch):
    """Before a job starts, missing weights are fetched into torch hub's cache, where every later lookup (the
    job's own load, the feature cache's key, ``kennel models``) finds them offline: one download, not two."""
    import torch

    from kennel.job.build import fetch_job_weights
    from kennel.models import available_offline, get_backbone, weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    downloads: list[str] = []

    def download(spec):
        downloads.append(spec.name)
        path = weights._torchvision_path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        return path

    monkeypatch.setattr(weights, "_torchvision_download", download)
    spec = get_backbone("resnet18")
    assert available_offline(spec) is None
    config = load_config(overrides={"model.backbone": "resnet18", "data.root": str(tmp_path)})
    fetch_job_weights(config)
    fetch_job_weights(config)
    assert downloads == ["resnet18"]
    assert available_offline(spec) == weights.WeightsSource("torchvision-cache", str(weights._torchvision_path(spec)))


def test_a_hub_download_without_a_network_fails_at_once_unless_a_proxy_may_reach_it(monkeypatch) -> None:
    """The Hugging Face client retries for half a minute without a network, logging each try: a hub name that
    does not resolve fails at once. Behind a proxy, which resolves names itself, the download is tried."""
    import socket
    import urllib.request

    import huggingface_hub

    from kennel.models import get_backbone, weights

    asked: list[str] = []

    def hf_hub_download(repo_id, filename):
        asked.append(repo_id)
        raise OSError("the proxy said no")

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    spec = get_backbone("tf_efficientnet_lite0")
    with pytest.raises(weights.WeightsMissing, match=r"cannot resolve huggingface\.co: Name or service not known"):
        weights._download(spec)
    assert asked == []
    monkeypatch.setattr(urllib.request, "getproxies", lambda: {"https": "http://proxy.lan:3128"})
    with pytest.raises(weights.WeightsMissing, match="the proxy said no"):
        weights._download(spec)
    assert asked == [spec.timm_hub_id]


def test_a_weights_file_that_is_not_there_is_said_before_a_job_exists(dataset: Path, kennel_home: Path) -> None:
    result = kennel("train", "--data", dataset, "--model", "resnet18", "--weights", dataset / "nope.pth")
    assert result.exit_code == 2
    assert said(result) == [f"error: weights file {dataset / 'nope.pth'} does not exist (--weights)"]
    assert not list((kennel_home / "jobs").glob("*"))


def test_a_missing_photo_is_named_once_before_a_model_loads(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "artifact.json").write_text("{}")  # a model that would fail to load: the photo fails first
    for backend in (["--model", str(model)], ["--endpoint", "http://127.0.0.1:9"]):
        result = kennel("predict", *backend, tmp_path / "nope.jpg")
        assert result.exit_code == 1, result.output
        assert said(result) == [f"error: {tmp_path / 'nope.jpg'}: no such file or folder"]


def test_a_file_that_is_no_photo_is_named_once(artifact_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    result = kennel("predict", "--model", artifact_dir, text)
    assert result.exit_code == 1
    (line,) = said(result)
    assert line.startswith(f"error: {text}: cannot decode image (") and line.count("notes.jpg") == 1


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


def test_every_exit_code_is_said_in_the_help() -> None:
    """`kennel --help` lists the codes every command shares; `kennel train --help` what each means for a job."""
    root = " ".join(kennel("--help").output.split())  # as one line: the help wraps at the terminal's width
    for code in ("0 done", "1 the work failed", "2 a request it cannot use", "3 a job stopped by a rule", "130"):
        assert code in root
    train = " ".join(kennel("train", "--help").output.split())
    for code in ("0 completed, or ended by early stopping", "1 failed", "2 a request", "3 stopped by a debugger"):
        assert code in train
    assert "130 interrupted" in train
