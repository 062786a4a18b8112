"""Search spaces: the shipped ones, parsing, checks against the training config, grids, and what a trial gets."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from kennel.config import load_config
from kennel.tune.space import SearchSpace, SpaceError, load_space, parse_space, shipped_spaces


def test_the_shipped_spaces_load_and_fit_the_default_config() -> None:
    assert shipped_spaces() == ["default", "seed"]
    for name in shipped_spaces():
        load_space(name).check_against({})


def test_the_seed_space_is_the_original_projects() -> None:
    seed = load_space("seed").parameters
    assert set(seed) == {"optim.lr", "data.batch_size", "epochs"}
    lr = seed["optim.lr"]
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 0.001, 0.1, False)
    assert seed["data.batch_size"].choices == [32, 64, 128, 256, 512]
    assert seed["epochs"].choices == [5, 10, 20, 40, 100, 200]


def test_the_default_space_samples_the_learning_rate_on_a_log_scale() -> None:
    lr = load_space("default").parameters["optim.lr"]
    assert lr.log and lr.low <= 1e-4 and lr.high >= 0.1


BAD = {
    "unknown key": ({"optim.lrr": {"type": "float", "low": 0.1, "high": 1}}, "optim.lrr: not a training config key"),
    "a section": ({"optim": {"type": "float", "low": 0.1, "high": 1}}, "parameter optim: a config section"),
    "bounds": ({"optim.lr": {"type": "float", "low": 1, "high": 0.1}}, "parameter optim.lr: low (1.0) must be below"),
    "log of zero": ({"optim.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
    "bad type": ({"optim.lr": {"type": "floot", "low": 0, "high": 0.1}}, "`type` must be float, int or categorical"),
    "typo": ({"optim.lr": {"type": "float", "low": 0.001, "hi": 0.1}}, "parameter optim.lr: hi: unknown key"),
    "bad choice": (
        {"data.augment": {"type": "categorical", "choices": ["light", "heavy"]}},
        "parameter data.augment: the training config rejects 'heavy'",
    ),
    "float on an int": (
        {"data.batch_size": {"type": "float", "low": 16, "high": 64}},
        "parameter data.batch_size: the training config rejects",
    ),
    "out of range": ({"optim.label_smoothing": {"type": "float", "low": 0, "high": 1.5}}, "rejects 1.5"),
    "empty": ({}, "parameters"),
    "repeated choice": ({"epochs": {"type": "categorical", "choices": [5, 5]}}, "choices repeat a value"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_space_names_the_parameter_and_the_problem(case: str) -> None:
    parameters, message = BAD[case]
    with pytest.raises(SpaceError) as error:
        parse_space({"parameters": parameters}).check_against({})
    assert message in str(error.value)


def test_a_space_file_that_is_not_yaml_or_not_there_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "space.yaml"
    broken.write_text("parameters: {optim.lr: [")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(broken)
    with pytest.raises(SpaceError, match="shipped space: default, seed"):
        load_space(tmp_path / "missing.yaml")


def test_grids_come_from_choices_steps_and_grid_lists() -> None:
    space = parse_space(
        {
            "parameters": {
                "optim.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True, "grid": [0.001, 0.01]},
                "epochs": {"type": "int", "low": 2, "high": 6, "step": 2},
                "optim.label_smoothing": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
                "data.augment": {"type": "categorical", "choices": ["none", "light"]},
            }
        }
    )
    grid = space.grid()
    assert grid["optim.lr"] == [0.001, 0.01]
    assert grid["epochs"] == [2, 4, 6]
    assert grid["optim.label_smoothing"] == pytest.approx([0.0, 0.1, 0.2])
    assert space.grid_size() == 2 * 3 * 3 * 2


def test_a_continuous_parameter_has_no_grid() -> None:
    with pytest.raises(SpaceError, match=r"parameter optim\.lr: the grid strategy needs a finite set"):
        load_space("default").grid()


def test_suggestions_are_config_overrides_within_the_space() -> None:
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        values = space.suggest(study.ask())
        config = load_config(overrides=values)
        assert 1e-4 <= config.optim.lr <= 0.1
        assert config.data.batch_size in (16, 32, 64, 128, 256)
        assert config.epochs % 5 == 0 and 5 <= config.epochs <= 40
        assert space.contains(values) == values


def test_contains_keeps_only_values_the_space_can_take() -> None:
    space = load_space("seed")
    assert space.contains({"optim.lr": 0.01, "epochs": 15, "data.batch_size": 64, "seed": 1}) == {
        "optim.lr": 0.01,
        "data.batch_size": 64,
    }
    assert space.upper("epochs", 3) == 200 and space.upper("optim.weight_decay", 0.5) == 0.5


def test_a_space_round_trips_through_yaml(tmp_path: Path) -> None:
    space = load_space("default")
    path = tmp_path / "space.yaml"
    path.write_text(space.to_yaml())
    assert load_space(path) == space
    assert isinstance(space, SearchSpace)
