"""Configuration: precedence, validation and error messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import kennel
from pydantic import BaseModel

from kennel.config import PATH_KEYS, ConfigError, TrainConfig, absolute_paths, config_to_yaml, dotted_value, load_config


def test_defaults_then_file_then_flags(tmp_path: Path):
    file = tmp_path / "job.yaml"
    file.write_text("epochs: 7\noptim:\n  lr: 0.05\n  name: sgd\n")
    config = load_config(file, {"optim.lr": 0.2})
    assert (config.epochs, config.optim.name, config.optim.lr) == (7, "sgd", 0.2)
    assert config.data.batch_size == TrainConfig().data.batch_size


def test_resolved_config_round_trips_through_yaml(tmp_path: Path):
    config = load_config(overrides={"model.freeze": "2", "data.augment": "strong"})
    file = tmp_path / "saved.yaml"
    file.write_text(config_to_yaml(config))
    assert load_config(file) == config
    assert config.model.freeze == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim.lrr": 1.0}, "optim.lrr: unknown key"),
        ({"epochs": 0}, "epochs"),
        ({"optim.lr": -1}, "optim.lr"),
        ({"model.backbone": "resnet9000"}, "unknown backbone 'resnet9000'"),
        ({"model.freeze": "some"}, "model.freeze"),
        ({"data.augment": "extreme"}, "data.augment"),
        ({"feature_views": 4, "data.augment": "none"}, "feature_views"),
    ],
)
def test_bad_values_name_the_key(overrides: dict, message: str):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(overrides=overrides)


def test_bad_files_are_clear(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path):
    result = kennel("train", "--data", tmp_path, "--set", "optim.nope=1", "--print-config")
    assert result.exit_code == 2
    assert "optim.nope: unknown key" in result.output
    assert "Traceback" not in result.output


def test_cli_print_config_applies_flags():
    result = kennel("train", "--lr", "0.5", "--model", "tiny", "--print-config")
    assert result.exit_code == 0, result.output
    assert "lr: 0.5" in result.output and "backbone: tiny" in result.output


def test_cli_missing_dataset_is_a_clear_error(tmp_path: Path):
    result = kennel("train", "--data", tmp_path / "nowhere", "--model", "tiny", "--set", "model.pretrained=false")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_sagemaker_channels_become_split_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from kennel.cli.train import sagemaker_env

    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "t"))
    monkeypatch.setenv("SM_CHANNEL_TEST", str(tmp_path / "x"))
    config = load_config(overrides=sagemaker_env())
    assert config.data.split_dir("train") == tmp_path / "t"
    assert config.data.split_dir("test") == tmp_path / "x"
    # A relative channel is a folder of where the job started, and stays that folder in the saved config.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SM_CHANNEL_VALID", "channels/valid")
    saved = config_to_yaml(load_config(overrides=sagemaker_env()))
    assert yaml.safe_load(saved)["data"]["valid"] == str(tmp_path / "channels" / "valid")


def _path_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The dotted keys of every field of ``model`` (and of the configs inside it) that holds a path."""
    keys = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += _path_fields(field.annotation, f"{prefix}{name}.")
        elif "Path" in str(field.annotation):
            keys.append(f"{prefix}{name}")
    return keys


def test_every_path_in_a_config_is_absolute_from_the_folder_it_was_given_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert sorted(PATH_KEYS) == sorted(_path_fields(TrainConfig))
    start = tmp_path / "start"
    start.mkdir()
    monkeypatch.chdir(start)
    given = {key: f"given/{key}" for key in PATH_KEYS}
    config = load_config(overrides={**given, "model.backbone": "tiny"})
    assert all(dotted_value(config.model_dump(), key) == start / "given" / key for key in PATH_KEYS)
    up = load_config(overrides={"data.root": "../photos", "model.weights": "~/w.safetensors", "model.backbone": "tiny"})
    assert (up.data.root, up.model.weights) == (tmp_path / "photos", Path.home() / "w.safetensors")
    # Saved with a job, the config names the same folders from anywhere else.
    file = start / "saved.yaml"
    file.write_text(config_to_yaml(config))
    monkeypatch.chdir(tmp_path)
    assert load_config(file) == config


def test_a_config_mapping_kept_as_it_is_gets_absolute_paths_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    raw = {"data": {"root": "photos", "batch_size": 8}, "model": {"weights": None}, "epochs": 2}
    assert absolute_paths(raw) == {
        "data": {"root": str(tmp_path / "photos"), "batch_size": 8},
        "model": {"weights": None},
        "epochs": 2,
    }
    assert raw["data"]["root"] == "photos"  # the caller's mapping is not changed
    assert absolute_paths({"data": "not a mapping"}) == {"data": "not a mapping"}  # validation says what is wrong


def test_cli_prints_the_data_folder_as_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    result = kennel("train", "--data", "photos", "--model", "tiny", "--print-config")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["data"]["root"] == str(tmp_path / "photos")
