"""The dog verdict on real photos: lite0's frozen ImageNet head (the one every lite0 artifact carries)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_data
from fastapi.testclient import TestClient

from kennel.artifact import save_artifact
from kennel.models import create_model, get_backbone
from kennel.serve.app import ServeSettings, create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 002.Bulldog (cartoons, mascots) and 006.Greyhound (buses, stations) hold many photos with no dog at all.
NOISY = {"002.Bulldog", "006.Greyhound"}
PER_CLASS = 15


def dog_rate(client: TestClient, photos: list[Path]) -> float:
    dogs = 0
    for photo in photos:
        response = client.post("/invocations", content=photo.read_bytes(), headers={"content-type": "image/jpeg"})
        assert response.status_code == 200, f"{photo}: {response.text}"
        dogs += response.json()["dog"]["is_dog"]
    return dogs / len(photos)


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
    with TestClient(create_app(artifact, ServeSettings(max_wait_ms=0))) as client:
        not_dog = {
            name: 1 - dog_rate(client, sorted((not_dogs_root / name).iterdir())) for name in ("cat", "human", "other")
        }
        dog = dog_rate(client, dogs)
    print(f"not-dog accuracy {not_dog}; dog accuracy {dog:.3f} on {len(dogs)} dogs10 test photos")
    assert all(rate >= 0.9 for rate in not_dog.values()), not_dog
    assert dog >= 0.85, dog
