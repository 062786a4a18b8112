"""The default recipe on real photos (../shared/data/breeds4): skipped with a reason when they are absent."""

from __future__ import annotations

import pytest
from conftest import shared_data

from kennel.config import load_config
from kennel.job import train
from kennel.predictor import Predictor

pytestmark = pytest.mark.integration


def test_default_recipe_reaches_95_percent_on_breeds4(photo_cache):
    data = shared_data("breeds4")
    record = train(load_config(overrides={"data.root": str(data), "tracking": False}), stream=None)
    assert record.status == "completed"
    assert record.metrics["test_accuracy"] >= 0.95, record.metrics

    # The exported artifact (ONNX Runtime on CPU) agrees with the job's own evaluation on real photos.
    predictor = Predictor.load(record.artifact)
    photos = sorted((data / "test").glob("*/*"))[::10]
    labels = [p.parent.name.split(".", 1)[1].replace("_", " ") for p in photos]
    predictions = predictor.predict(photos)
    agreement = sum(p.label == label for p, label in zip(predictions, labels, strict=True)) / len(photos)
    assert agreement >= 0.9
