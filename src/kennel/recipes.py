"""Named recipes: the settings ``kennel train --recipe NAME`` starts from, under a config file and flags (a flag
still wins). Each recipe here has its row in the recipe log (docs/results/recipes.md), measured on the valid
split's choices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kennel.registry import Registry


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # what it does and what it costs
    settings: dict[str, Any] = field(default_factory=dict)  # nested config keys, as a YAML file holds them


RECIPES: Registry[Recipe] = Registry("recipe")


def add_recipe(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name, recipe)


add_recipe(
    Recipe(
        "default",
        "tf_efficientnet_lite0 and tf_efficientnet_lite2 fused, frozen, a head on their cached features (the defaults)",
    )
)
add_recipe(
    Recipe(
        "fast",
        "tf_efficientnet_lite0 alone, frozen: half the default's time, about 2 points lower",
        {"model": {"backbone": "tf_efficientnet_lite0"}},
    )
)
add_recipe(
    Recipe(
        "best",
        "the strongest measured that a 2-core CPU affords: tf_efficientnet_lite0, lite1 and lite2 fused, frozen",
        {"model": {"backbone": "tf_efficientnet_lite0+tf_efficientnet_lite1+tf_efficientnet_lite2"}},
    )
)
add_recipe(
    Recipe(
        "stages",
        "fine-tuning on a CPU: tf_efficientnet_lite0's last two stages and the head trained on the cached output "
        "of the frozen ones (4 augmented views a photo)",
        {
            "model": {"backbone": "tf_efficientnet_lite0", "freeze": -2},
            "stage_cache": True,
            "feature_views": 4,
            "epochs": 6,
        },
    )
)


def recipe_settings(name: str) -> dict[str, Any]:
    """The settings of recipe ``name``; a ValueError lists the recipes there are."""
    try:
        return RECIPES.get(name).settings
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
