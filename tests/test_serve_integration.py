"""The dog verdict on real photos: lite0's frozen ImageNet head (the one every lite0 artifact carries)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_data
from fastapi.testclient import TestClient
from helpers import LOOPBACK

from kennel.artifact import save_artifact
from kennel.models import create_model, get_backbone
from kennel.serve.app import ServeSettings, create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 002.Bulldog (cartoons, mascots) and 006.Greyhound (buses, stations) hold many photos with no dog at all.
NOISY = {"002.Bulldog", "006.Greyhound"}
PER_CLASS = 15


def rates(client: TestClient, photos: list[Path]) -> tuple[float, float]:
    """The share of ``photos`` answered as a dog, and the share where a human face was found."""
    dogs = faces = 0
    for photo in photos:
        response = client.post("/invocations", content=photo.read_bytes(), headers={"content-type": "image/jpeg"})
        assert response.status_code == 200, f"{photo}: {response.text}"
        dogs += response.json()["dog"]["is_dog"]
        faces += response.json()["human_face"]["found"]
    return dogs / len(photos), faces / len(photos)


def test_dog_verdict_on_dogs_and_not_dogs(tmp_path: Path) -> None:
    not_dogs_root, dogs_root = shared_data("not-dogs"), shared_data("dogs10") / "test"
    model = create_model("tf_efficientnet_lite0", 2, pretrained=True)
    artifact = save_artifact(model, ["a", "b"], get_backbone("tf_efficientnet_lite0").preprocessing, tmp_path / "m")
    dogs = [
        photo
        for folder in sorted(dogs_root.iterdir())
        if folder.name not in NOISY
        for photo in sorted(folder.iterdir())[:PER_CLASS]
    ]
    with TestClient(create_app(artifact, ServeSettings(max_wait_ms=0)), base_url=LOOPBACK) as client:
        found = {name: rates(client, sorted((not_dogs_root / name).iterdir())) for name in ("cat", "human", "other")}
        found["dogs"] = rates(client, dogs)
    print(f"(dog, face) rates: {found}, on {len(dogs)} dogs10 test photos")
    assert all(found[name][0] <= 0.1 for name in ("cat", "human", "other")), found  # not-dog accuracy >= 90%
    assert found["dogs"][0] >= 0.85, found
    assert found["human"][1] >= 0.85, found  # faces found in the human photos
    assert all(found[name][1] <= 0.1 for name in ("cat", "other", "dogs")), found  # and rarely elsewhere
