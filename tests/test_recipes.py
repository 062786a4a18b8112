"""Named recipes: what --recipe sets, under the config file and the flags, and a clear error for a typo."""

from __future__ import annotations

import yaml
from helpers import kennel

from kennel.config import load_config
from kennel.recipes import RECIPES


def test_every_recipe_is_a_valid_config() -> None:
    assert {"default", "fast", "best"} <= set(RECIPES)
    for name in RECIPES:
        load_config(recipe=name)  # raises if a recipe names a key or value the config does not take


def test_a_recipe_sets_its_keys_and_a_flag_still_wins() -> None:
    fused = "tf_efficientnet_lite0+tf_efficientnet_lite1+tf_efficientnet_lite2"
    best = yaml.safe_load(kennel("train", "--recipe", "best", "--print-config").output)
    assert best["model"]["backbone"] == fused and best["feature_views"] == 1
    overridden = yaml.safe_load(kennel("train", "--recipe", "best", "--views", "2", "--print-config").output)
    assert overridden["feature_views"] == 2 and overridden["model"]["backbone"] == fused
    fast = yaml.safe_load(kennel("train", "--recipe", "fast", "--model", "tiny", "--print-config").output)
    assert fast["model"]["backbone"] == "tiny"
    assert load_config(recipe="default") == load_config()


def test_an_unknown_recipe_is_one_line_with_a_close_match() -> None:
    result = kennel("train", "--recipe", "bset", "--print-config")
    assert result.exit_code == 2
    assert "unknown recipe 'bset' (did you mean 'best'?); known: best, default, fast" in result.output
    assert "Traceback" not in result.output
