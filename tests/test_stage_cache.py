"""Fine-tuning the last stages on their cached inputs (``stage_cache``): the classifier runs stage by stage exactly
as it runs whole, the job trains those stages (and only those) on activations computed once, a warm job reads
them back, and what the job leaves serves the trained stages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from kennel.config import ConfigError, load_config
from kennel.features import Features
from kennel.job import train
from kennel.jobs import JobDir
from kennel.jobs.engine_lines import engine_lines
from kennel.models import create_model


@pytest.mark.parametrize(
    "backbone", ["tiny", "tf_efficientnet_lite0", "resnet18", "mobilenet_v3_large", "convnext_tiny"]
)
def test_the_classifier_run_stage_by_stage_is_the_whole(backbone: str):
    torch.manual_seed(0)
    model = create_model(backbone, num_classes=5, pretrained=False, freeze=2).eval()
    size = 32 if backbone == "tiny" else 96
    image = torch.randn(2, 3, size, size)
    with torch.no_grad():
        whole = model(image)
        by_stage = model.trainable_part()(model.frozen_part()(image))
    torch.testing.assert_close(by_stage, whole, rtol=1e-4, atol=1e-5)


def test_only_the_stages_after_the_frozen_ones_are_trainable():
    model = create_model("tiny", num_classes=3, pretrained=False, freeze=1)
    tail = model.trainable_part()
    trainable = {id(p) for p in tail.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in [*model.backbone_parameters(), *model.head_parameters()]}
    assert not any(id(p) in trainable for p in model.frozen_part().parameters())


def test_a_fused_backbone_or_no_frozen_stage_cannot_run_stage_by_stage():
    fused = create_model("tiny+tiny_wide", num_classes=3, pretrained=False, freeze=0)
    with pytest.raises(ValueError, match="fused backbone is one stage"):
        fused.trainable_part()
    with pytest.raises(ValueError, match="freeze some of its 3 stages"):
        create_model("tiny", num_classes=3, pretrained=False, freeze=0).trainable_part()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.freeze": 0}, "needs model.freeze N or -N, not 0"),
        ({"model.freeze": 1, "model.backbone": "tiny+tiny_wide"}, "is fused"),
        ({"model.freeze": 1, "tta": "flip"}, "use tta none"),
        ({"model.freeze": 1, "engine.precision": "int8"}, "int8 is for frozen features"),
    ],
)
def test_a_stage_cache_it_cannot_build_is_a_config_error(overrides: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"stage_cache": True, "model.backbone": "tiny", **overrides})


def _stage_caches(home: Path) -> list[Path]:
    return sorted((home / "cache" / "features").glob("tiny-to-stage1-*.safetensors"))


@pytest.mark.slow
def test_a_job_fine_tunes_the_last_stages_on_their_cached_inputs(dataset: Path, kennel_home: Path):
    config = tiny_config(dataset, epochs=6, stage_cache=True, feature_views=2, **{"model.freeze": 1, "optim.lr": 0.03})
    torch.manual_seed(config.seed)  # the job's model starts from the same random weights
    model = create_model("tiny", num_classes=3, pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = train(config, stream=None)

    assert record.status == "completed"
    assert record.metrics["best_valid_accuracy"] >= 0.8  # as fine-tuning on photos reaches on this sample
    caches = _stage_caches(kennel_home)
    assert len(caches) == 2  # train (two views) and valid; the test split runs on its photos
    train_cache = max(caches, key=lambda p: Features.load(p).features.shape[0])
    stored = Features.load(train_cache)
    assert stored.features.shape == (2 * 36, 8, 16, 16)  # 36 photos x 2 views, the stem's 8 channels at 32/2 px
    assert stored.features.dtype == torch.float16
    assert record.engine["frozen stages"]["frozen_stages"] == 1
    assert "test" in record.engine  # the test split ran through the whole model
    assert "test_accuracy" in record.metrics

    # The artifact holds the trained stages and the frozen stem as the pretrained weights left it.
    from safetensors.torch import load_file

    saved = load_file(str(Path(record.artifact) / "model.safetensors"))
    stem = [k for k in before if k.startswith("features.stem.")]
    later = [k for k in before if k.startswith("features.stage2.") and k.endswith("weight")]
    assert stem and later
    trained = {k.removeprefix("model."): v for k, v in saved.items()}
    assert all(torch.equal(trained[k], before[k]) for k in stem)
    assert not all(torch.equal(trained[k], before[k]) for k in later)

    again = train(config, stream=None)  # warm: the cached stage inputs are read, not computed
    assert again.engine["frozen stages"]["cached"] is True
    lines = dict(engine_lines(again.engine))
    assert lines["frozen stages"].startswith("cached ") and "stage inputs, none computed" in lines["frozen stages"]
    assert again.metrics["feature_seconds"] < record.metrics["feature_seconds"]
    assert _stage_caches(kennel_home) == caches
    assert JobDir(Path(again.path)).read_metrics("epoch")


def test_without_stage_cache_a_partly_frozen_job_trains_on_photos(dataset: Path, kennel_home: Path):
    record = train(tiny_config(dataset, epochs=1, **{"model.freeze": 1}), stream=None)
    assert record.status == "completed"
    assert not _stage_caches(kennel_home)
    assert "extraction" not in record.engine


def test_kennel_train_stage_cache_flag_sets_it(dataset: Path):
    import yaml
    from helpers import kennel

    shown = kennel("train", "--data", dataset, "--model", "tiny", "--freeze", "1", "--stage-cache", "--print-config")
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.output)["stage_cache"] is True
    refused = kennel("train", "--data", dataset, "--model", "tiny", "--stage-cache", "--freeze", "0")
    assert refused.exit_code == 2
    assert "stage_cache needs model.freeze N or -N, not 0" in " ".join(refused.output.split())


@pytest.mark.parametrize(("freeze", "frozen"), [(-1, 2), (-3, 0), (2, 2)])
def test_a_negative_freeze_leaves_the_last_stages_trainable(freeze: int, frozen: int):
    model = create_model("tiny", num_classes=3, pretrained=False, freeze=freeze)
    assert model.frozen_stages == frozen
    with pytest.raises(ValueError, match="has 3 stages; cannot freeze -4"):
        model.freeze(-4)


def test_the_stages_recipe_runs_the_last_two_stages_of_any_backbone(dataset: Path):
    config = load_config(overrides={"data.root": str(dataset), "model.backbone": "tiny"}, recipe="stages")
    assert config.stage_cache and config.model.freeze == -2
    model = create_model("tiny", num_classes=3, pretrained=False, freeze=config.model.freeze)
    assert model.num_stages - model.frozen_stages == 2
