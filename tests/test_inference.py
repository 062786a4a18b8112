"""The inference engine on the tiny backbone: every backend agrees with PyTorch fp32, ``auto`` measures once per
machine, cached ONNX exports are checked and rebuilt, int8 is checked, and a warm job opens no photo."""

from __future__ import annotations

import builtins
import io
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from kennel.data.dataset import ImageDataset
from kennel.data.images import ImageError
from kennel.data.layout import load_layout
from kennel.inference import BACKENDS, EngineError, choice, features_graph, machine, open_engine, store
from kennel.inference.pipeline import batches
from kennel.models import create_model, get_backbone

CPU = torch.device("cpu")
PRE = get_backbone("tiny").preprocessing


def photos(count: int, seed: int = 0) -> torch.Tensor:
    """Preprocessed batches of smooth random images (blurred noise: like photos, not like static)."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(count, 3, 8, 8, generator=generator)
    images = torch.nn.functional.interpolate(small, size=PRE.input_size, mode="bilinear", align_corners=False)
    return (images - 0.5) / 0.25


@pytest.fixture
def graph():
    torch.manual_seed(0)
    features = create_model("tiny", num_classes=4, pretrained=False).features
    calibration = photos(64, seed=1).numpy()
    return features_graph(
        features,
        "tiny",
        "random:seed0",
        PRE.input_size,
        calibration=lambda: (calibration[i : i + 16] for i in range(0, 64, 16)),
        calibration_id="test",
    )


def runnable_here(graph) -> list[str]:
    return [name for name in BACKENDS if BACKENDS.get(name).unavailable(graph, CPU) is None]


def test_every_backend_matches_pytorch_fp32(graph) -> None:
    images = photos(200, seed=2)
    (reference,) = open_engine(graph, CPU, "torch-eager")(images)
    head = torch.nn.Linear(reference.shape[1], 10)
    torch.manual_seed(3)
    torch.nn.init.normal_(head.weight, std=1.0)
    expected_top1 = head(reference).argmax(1)
    names = runnable_here(graph)
    assert {"torch-eager", "torch-channels-last", "onnxruntime-fp32", "onnxruntime-int8"} <= set(names)
    for name in names:
        (got,) = open_engine(graph, CPU, name)(images)
        assert got.shape == reference.shape and got.dtype == torch.float32, name
        precision = BACKENDS.get(name).precision
        if precision == "fp32":
            torch.testing.assert_close(got, reference, atol=1e-4, rtol=1e-4, msg=name)
        elif precision == "bf16":  # 8 bits of mantissa: about 1% relative
            torch.testing.assert_close(got, reference, atol=0.05, rtol=0.05, msg=name)
        else:  # int8: what matters is the answer a head gives
            agreement = (head(got).argmax(1) == expected_top1).float().mean().item()
            assert agreement >= 0.99, f"{name}: top-1 agreement {agreement:.3f}"


def test_auto_measures_once_per_machine_and_again_when_it_changes(graph, monkeypatch) -> None:
    timed: list[str] = []
    real = choice.time_backend

    def counting(backend, *args, **kwargs):
        timed.append(backend.name)
        return real(backend, *args, **kwargs)

    monkeypatch.setattr(choice, "time_backend", counting)
    engine = open_engine(graph, CPU)
    assert sorted(timed) == sorted(runnable_here(graph))
    assert engine.backend.name == max(engine.speeds, key=engine.speeds.__getitem__)
    assert engine.reason.startswith("fastest measured here")

    timed.clear()
    again = open_engine(graph, CPU)  # the stored figures, no timing
    assert timed == [] and again.backend.name == engine.backend.name and again.speeds == engine.speeds

    versions = machine.library_versions()
    monkeypatch.setattr(machine, "library_versions", lambda: {**versions, "onnxruntime": "99.0"})
    open_engine(graph, CPU)
    assert sorted(timed) == sorted(runnable_here(graph))  # a new library version is measured again

    timed.clear()
    monkeypatch.setattr(machine, "cpu_model", lambda: "Another CPU")
    open_engine(graph, CPU)
    assert sorted(timed) == sorted(runnable_here(graph))  # and so is another CPU
    stored = choice._read()
    assert len(stored) == 3 and all(graph.architecture in entry["graphs"] for entry in stored.values())


def test_auto_restricted_to_a_precision_or_a_runtime(graph) -> None:
    assert open_engine(graph, CPU, precision="fp32").precision == "fp32"
    assert open_engine(graph, CPU, precision="int8").backend.name == "onnxruntime-int8"
    assert open_engine(graph, CPU, "torch").backend.runtime == "torch"
    assert open_engine(graph, CPU, "onnx", "fp32").backend.name == "onnxruntime-fp32"  # the older name still works


def test_backends_that_cannot_run_say_why(graph, monkeypatch) -> None:
    monkeypatch.setattr(machine, "has_native_bf16", lambda: False)
    with pytest.raises(EngineError, match="torch-bf16 cannot run here: this CPU has no native bf16"):
        open_engine(graph, CPU, "torch-bf16")
    with pytest.raises(EngineError, match="needs a CUDA GPU"):
        open_engine(graph, CPU, "torch-cuda")
    with pytest.raises(EngineError, match=r"unknown inference backend 'tensorrt'.*onnxruntime"):
        open_engine(graph, CPU, "tensorrt")
    with pytest.raises(EngineError, match="runs at fp32, not int8"):
        open_engine(graph, CPU, "onnxruntime-fp32", "int8")
    uncalibrated = features_graph(graph.module().features, "tiny", "random:seed0", PRE.input_size)
    with pytest.raises(EngineError, match="int8 needs calibration photos"):
        open_engine(uncalibrated, CPU, "onnxruntime-int8")


def test_a_damaged_or_missing_cached_export_is_rebuilt(graph, caplog) -> None:
    path = store.onnx_file(graph, "fp32")
    checksum = store.sha256(path)
    assert store.onnx_file(graph, "fp32") == path and store.sha256(path) == checksum  # kept, not rebuilt
    path.write_bytes(path.read_bytes()[:1000])  # cut short, as a killed copy would leave it
    with caplog.at_level(logging.WARNING):
        assert store.onnx_file(graph, "fp32") == path
    assert "checksum does not match" in caplog.text and "rebuilding" in caplog.text
    assert store.sha256(path) == checksum  # the same export again
    path.unlink()
    assert store.onnx_file(graph, "fp32") == path and path.is_file()
    (got,) = open_engine(graph, CPU, "onnxruntime-fp32")(photos(4))
    assert got.shape == (4, 32)  # the tiny backbone's 32 pooled features


def test_int8_is_timed_on_a_cheaply_calibrated_model_and_its_build_time_scaled(graph) -> None:
    open_engine(graph, CPU)  # times every backend, int8 among them
    assert "onnxruntime-int8" in choice.stored(graph, CPU).speeds
    assert not store.built(graph, "int8")  # the graph's own int8 model is left to a job that takes int8
    timing = choice.timing_graph(graph)
    assert timing.calibration_id == "timing" and store.built(timing, "int8")
    record = json.loads(store.onnx_file(timing, "int8").with_suffix(".json").read_text())
    assert record["calibration_batches"] == 1 and 0 <= record["calibration_s"] <= record["quantize_s"]
    # The graph's own build, calibrated on 16 batches, from the timing build's: its fixed part and 16 passes.
    expected = record["quantize_s"] + 15 * record["calibration_s"]
    assert store.build_seconds(graph, "int8", 16) == pytest.approx(expected)
    store.onnx_file(graph, "int8")  # built: it is timed as it is, and its own build counts
    assert choice.timing_graph(graph) is graph
    own = json.loads(store.onnx_file(graph, "int8").with_suffix(".json").read_text())
    assert own["calibration_batches"] == 4  # the fixture's 64 photos in batches of 16
    assert store.build_seconds(graph, "int8", 4) == pytest.approx(own["quantize_s"])


def test_int8_exports_differ_by_calibration(graph) -> None:
    int8 = store.onnx_file(graph, "int8")
    other = features_graph(
        graph.module().features,
        "tiny",
        "random:seed0",
        PRE.input_size,
        calibration=lambda: iter([photos(16, seed=9).numpy()]),
        calibration_id="other",
    )
    assert store.onnx_file(other, "int8") != int8
    assert store.onnx_file(other, "fp32") == store.onnx_file(graph, "fp32")  # one fp32 export for both


def test_a_second_choice_by_the_first_ones_figures_times_nothing_again(graph, monkeypatch) -> None:
    """A job choosing int8's fallback after int8 does not time the backends again, even where the figures are
    provisional and the machine has since turned quiet (the next start on a quiet machine does)."""
    timed: list[str] = []
    real = choice.time_backend
    monkeypatch.setattr(
        choice, "time_backend", lambda backend, *a, **k: timed.append(backend.name) or real(backend, *a, **k)
    )
    monkeypatch.setattr(machine, "others_busy", lambda start, end=None: float(machine.cores()))  # busy
    first = open_engine(graph, CPU)
    assert sorted(timed) == sorted(runnable_here(graph)) and first.measurement.provisional
    monkeypatch.setattr(machine, "others_busy", lambda start, end=None: 0.0)  # quiet from now on
    timed.clear()
    second = open_engine(graph, CPU, exclude=(first.backend.name,), figures=first.measurement)
    assert timed == [] and second.backend.name != first.backend.name
    open_engine(graph, CPU, exclude=(first.backend.name,))  # a start of its own times the provisional ones again
    assert timed


def _with_statistics(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in eval mode with BatchNorm statistics and affine terms far from the identity's."""
    generator = torch.Generator().manual_seed(4)
    for norm in module.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            for tensor, low, high in ((norm.running_mean, -1, 1), (norm.running_var, 0.3, 3), (norm.weight, 0.5, 2)):
                tensor.data = low + (high - low) * torch.rand(tensor.shape, generator=generator)
            norm.bias.data = torch.randn(norm.bias.shape, generator=generator)
    return module.eval()


def test_batchnorm_is_folded_into_its_convolution_where_the_outputs_stay_the_same() -> None:
    from timm.layers import BatchNormAct2d

    from kennel.inference.folding import fold_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(  # as timm's EfficientNets: a convolution, then batch norm with its activation
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        BatchNormAct2d(8, act_layer=torch.nn.ReLU6),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise, with a bias of its own
        torch.nn.BatchNorm2d(8),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    tiny = create_model("tiny", num_classes=4, pretrained=False).features
    images = photos(6)
    for module in (_with_statistics(net), _with_statistics(tiny)):
        folded = fold_batchnorm(module, PRE.input_size)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())  # the caller's is left as it was
        with torch.no_grad():
            torch.testing.assert_close(folded(images), module(images), atol=1e-5, rtol=1e-4)

    class AroundTheNorm(torch.nn.Module):  # the convolution's output also goes round its batch norm
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            out = self.conv(image)
            return self.norm(out) + out

    around = _with_statistics(AroundTheNorm())
    assert fold_batchnorm(around, PRE.input_size) is around  # folding would change its outputs: left as it is


def test_a_clear_loser_is_timed_once_and_the_likely_fastest_first(graph, monkeypatch) -> None:
    from kennel.inference.backends import Backend

    calls: list[int] = []

    def open_(graph, device):
        return lambda batch: calls.append(len(batch)) or (batch.mean((2, 3)),)

    slow = Backend("slow", "torch", "fp32", "", lambda g, d: None, open_)
    choice.time_backend(slow, graph, CPU, batch_size=4)
    assert len(calls) == 1 + choice.MEASURE_RUNS  # a warm-up, then every timed run
    calls.clear()
    choice.time_backend(slow, graph, CPU, batch_size=4, beat=1e12)  # far under half of what was timed before
    assert len(calls) == 2  # the warm-up and one timed run

    timed: list[tuple[str, float | None]] = []
    speeds = {"onnxruntime-int8": 300.0, "torch-bf16": 250.0, "onnxruntime-fp32": 200.0}

    def fixed(backend, *args, beat=None, **kwargs):
        timed.append((backend.name, beat))
        return speeds.get(backend.name, 100.0)

    monkeypatch.setattr(choice, "time_backend", fixed)
    usable, _ = choice.candidates(graph, CPU)
    choice.measure(graph, CPU, usable)
    precisions = [BACKENDS.get(name).precision for name, _ in timed]
    assert precisions == sorted(precisions, key=["int8", "bf16", "fp32"].index)  # int8, then bf16, then fp32
    assert timed[0][1] is None and all(beat == 300.0 for _, beat in timed[1:])  # each against the fastest so far


def test_the_decode_pipeline_keeps_order_and_names_a_bad_photo(dataset: Path, tmp_path: Path) -> None:
    split = load_layout(dataset)["train"]
    data = ImageDataset(split, PRE.eval_transform(), draft_size=PRE.resize_size)
    serial = torch.stack([data[i][0] for i in range(len(data))])
    parallel = torch.cat([images for images, _ in batches(data, 5, threads=3)])
    labels = torch.cat([labels for _, labels in batches(data, 5, threads=3)])
    assert torch.equal(parallel, serial)
    assert labels.tolist() == [label for _, label in split.files]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    files = [*list(split.files)[:7], (broken, 0)]
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        list(batches(ImageDataset(files, PRE.eval_transform()), 4, threads=2))


def test_int8_verdict_rejects_features_that_lose_accuracy(tmp_path: Path) -> None:
    from kennel.extraction import int8_verdict
    from kennel.features import Features

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    centres = torch.randn(4, 16, generator=generator) * 3
    fp32 = centres[labels] + torch.randn(400, 16, generator=generator)
    same = Features(fp32 + 0.01 * torch.randn(400, 16, generator=generator), labels, [])
    noisy = Features(fp32 + 12.0 * torch.randn(400, 16, generator=generator), labels, [])
    reference = Features(fp32, labels, [])
    kept = int8_verdict(reference, same, "same")
    lost = int8_verdict(reference, noisy, "noisy")
    assert kept["ok"] and abs(kept["loss_points"]) <= 0.5
    assert not lost["ok"] and lost["loss_points"] > 0.5
    assert lost["valid_top1_fp32"] > lost["valid_top1_int8"]
    assert int8_verdict(reference, same, "noisy") == lost  # kept in the cache by its key


def test_a_warm_job_opens_no_photo(dataset: Path, monkeypatch) -> None:
    from kennel.config import load_config
    from kennel.job import train, warm_feature_cache

    config = load_config(
        overrides={
            "data.root": str(dataset),
            "model.backbone": "tiny",
            "model.pretrained": False,
            "epochs": 1,
            "tracking": False,
            "export_onnx": False,
            "profiler.enabled": False,
            "seed": 3,  # not 0: computing the features must not reseed the job's own random stream
            "model.dropout": 0.5,
        }
    )
    first = train(config, stream=None)
    assert first.engine["extraction"]["cached"] is False and first.engine["extraction"]["photos_per_s"] > 0
    assert first.engine["extraction"]["backend"] in BACKENDS
    root = str(dataset.resolve())
    opened: list[str] = []
    real_open, real_io_open, real_image_open = builtins.open, io.open, Image.open

    def watch(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and str(Path(file).resolve()).startswith(root):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def watch_image(file, *args, **kwargs):
        opened.append(str(file))
        return real_image_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watch)
    monkeypatch.setattr(io, "open", watch)
    monkeypatch.setattr(Image, "open", watch_image)
    assert warm_feature_cache(config)  # the job's whole feature path: layout, fingerprints, cache lookups
    monkeypatch.setattr(builtins, "open", real_open)
    monkeypatch.setattr(io, "open", real_io_open)
    assert opened == []
    second = train(config, stream=None)
    assert second.engine["extraction"]["cached"] is True
    assert second.metrics == first.metrics | {"feature_seconds": second.metrics["feature_seconds"]}


def fixed_speeds(monkeypatch, int8: float = 10.0, build_s: float = 1.0) -> None:
    """int8 the fastest here, then ONNX Runtime fp32, whatever this CPU really measures; an int8 build takes
    ``build_s``. The defaults are slow enough for int8 to pay for itself on the sample's 72 photos: it saves
    72 x (1/5 - 1/10) = 7.2 s against its check's 18 valid photos at 5 photos/s and two builds, 5.6 s."""
    import kennel.extraction

    speeds = {"onnxruntime-int8": int8, "onnxruntime-fp32": 5.0, "torch-bf16": 4.0, "torch-channels-last": 3.0}
    monkeypatch.setattr(choice, "time_backend", lambda backend, *a, **k: speeds.get(backend.name, 1.0))
    monkeypatch.setattr(kennel.extraction, "build_seconds", lambda graph, precision, batches: build_s)


def computed_splits(monkeypatch) -> list[tuple[str, str]]:
    """(split, precision) of each pass over a split's photos from now on."""
    import kennel.features

    passes: list[tuple[str, str]] = []
    real = kennel.features._compute

    def spy(engine, split, key, *args, **kwargs):
        passes.append((key.split, engine.precision))
        return real(engine, split, key, *args, **kwargs)

    monkeypatch.setattr(kennel.features, "_compute", spy)
    return passes


@pytest.mark.parametrize("loss", [2.0, 0.1])
def test_auto_keeps_int8_only_where_the_check_passes(dataset: Path, monkeypatch, loss: float) -> None:
    import kennel.extraction
    from kennel.config import load_config
    from kennel.job import train

    fixed_speeds(monkeypatch)
    passes = computed_splits(monkeypatch)
    verdict = {"valid_top1_fp32": 0.9, "valid_top1_int8": 0.9 - loss / 100, "loss_points": loss, "ok": loss <= 0.5}
    checked = []
    monkeypatch.setattr(kennel.extraction, "int8_verdict", lambda *args: checked.append(args[3]) or verdict)
    overrides = {"data.root": str(dataset), "model.backbone": "tiny", "model.pretrained": False, "epochs": 1}
    record = train(load_config(overrides={**overrides, "tracking": False}), stream=None)
    extraction = record.engine["extraction"]
    assert extraction["int8_check"] == verdict
    assert checked == ["fp32"]  # against the features of the backend auto would otherwise take
    artifact = Path(record.artifact)
    if loss > 0.5:  # the fastest backend other than int8, saying why
        assert extraction["backend"] == "onnxruntime-fp32" and extraction["precision"] == "fp32"
        assert extraction["reason"].startswith(
            "int8 lost 2.00 points of valid top-1; of the others, fastest measured here"
        )
        assert "int8_ok" not in record.metrics and not (artifact / "model.int8.onnx").exists()
        # The valid split twice (the fallback's features, which the check compared int8's with, and int8's), not
        # three times; every other split once, by the fallback.
        assert sorted(passes) == [("test", "fp32"), ("train", "fp32"), ("valid", "fp32"), ("valid", "int8")]
    else:
        assert extraction["backend"] == "onnxruntime-int8"
        assert {"valid_accuracy_fp32", "valid_accuracy_int8"} <= set(record.metrics)
        assert record.metrics["int8_ok"] == 1.0 and (artifact / "model.int8.onnx").is_file()
        assert sorted(passes) == [("test", "int8"), ("train", "int8"), ("valid", "fp32"), ("valid", "int8")]
        from kennel.predictor import Predictor

        assert Predictor.load(artifact).runtime == "onnxruntime-int8"  # the fastest, and the job cleared it
        assert Predictor.load(artifact, precision="fp32").runtime == "onnxruntime-fp32"


def test_auto_leaves_int8_out_where_it_costs_the_job_more_than_it_saves(dataset: Path, monkeypatch) -> None:
    import kennel.extraction
    from kennel.config import load_config
    from kennel.job import train

    # int8 at 6 photos/s against fp32's 5 saves the 72 photos 2.4 s; its check (18 photos at 5/s) and builds, 5.6 s.
    fixed_speeds(monkeypatch, int8=6.0, build_s=1.0)
    passes = computed_splits(monkeypatch)
    checked = []
    real_verdict = kennel.extraction.int8_verdict
    monkeypatch.setattr(kennel.extraction, "int8_verdict", lambda *args: checked.append(args) or real_verdict(*args))
    overrides = {"data.root": str(dataset), "model.backbone": "tiny", "model.pretrained": False, "epochs": 1}
    record = train(load_config(overrides={**overrides, "tracking": False}), stream=None)
    extraction = record.engine["extraction"]
    assert extraction["backend"] == "onnxruntime-fp32" and "int8_check" not in extraction and checked == []
    assert extraction["reason"].startswith("int8 would save 2 s on 72 photos and cost 6 s")
    assert sorted(passes) == [("test", "fp32"), ("train", "fp32"), ("valid", "fp32")]  # each split once
    assert not (Path(record.artifact) / "model.int8.onnx").exists()

    asked = train(load_config(overrides={**overrides, "tracking": False, "engine.precision": "int8"}), stream=None)
    assert asked.engine["extraction"]["precision"] == "int8" and checked  # asked for, it is not weighed
