"""A frozen backbone: its features computed once (the feature cache) and the head trained on them."""

from __future__ import annotations

import logging
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from kennel import extraction
from kennel.config import TrainConfig
from kennel.data.fingerprint import split_fingerprint
from kennel.data.layout import DatasetLayout
from kennel.distributed import Ranks
from kennel.features import Features
from kennel.inference import Engine, store
from kennel.inputs.common import SplitCache, TrainingInputs, cache_loader
from kennel.models import Classifier
from kennel.preprocessing import Preprocessing

log = logging.getLogger(__name__)


def feature_inputs(
    model: Classifier,
    layout: DatasetLayout,
    config: TrainConfig,
    preprocessing: Preprocessing,
    device: torch.device,
    weights_id: str,
    ranks: Ranks,
) -> TrainingInputs:
    started = time.perf_counter()
    # Each split's fingerprint once: every key and the int8 check's verdict are built from them.
    fingerprints = {split: split_fingerprint(layout[split]) for split in ("train", "valid", "test")}
    counts = {split: len(layout[split].files) for split in ("train", "valid", "test")}
    chosen = extraction.plan(
        model.features,
        model.backbone,
        weights_id,
        preprocessing,
        layout["train"],
        fingerprints["train"],
        device,
        config.engine.backend,
        config.engine.precision,
        photos=counts["train"] * config.feature_views + counts["valid"] + counts["test"],
        check_photos=counts["valid"],
    )
    cache = SplitCache(layout, config, model.backbone, weights_id, preprocessing, "features")

    def features_of(split: str, engine: Engine) -> Features:
        return cache.get(split, fingerprints[split], engine)

    verdict, valid_reference, valid_by_precision = None, None, {}
    if chosen.reference is not None:  # int8 features: check them on the valid split first
        # Against the features the job would otherwise use (fp32 where int8 was asked for): where int8 loses, the
        # valid split is not computed a third time.
        valid_reference = features_of("valid", chosen.reference)
        valid_int8 = features_of("valid", chosen.engine)
        valid_by_precision = {
            extraction.key_precision(chosen.reference): valid_reference,
            extraction.key_precision(chosen.engine): valid_int8,
        }
        verdict = extraction.int8_verdict(
            valid_reference, valid_int8, chosen.check_key(fingerprints["valid"]), chosen.reference.precision
        )
        if chosen.fallback is not None and not verdict["ok"]:
            log.warning(
                "int8 features lost %.2f points of valid top-1 (more than 0.5); using %s features instead",
                verdict["loss_points"],
                chosen.fallback.precision,
            )
            chosen.fall_back(f"int8 lost {verdict['loss_points']:.2f} points of valid top-1")
    tensors = {split: features_of(split, chosen.engine) for split in ("train", "test")}
    ready = valid_by_precision.get(
        extraction.key_precision(chosen.engine)
    )  # the check's valid features, not read again
    tensors["valid"] = ready if ready is not None else features_of("valid", chosen.engine)
    model.fit_standardisation(tensors["train"].features)
    seconds = time.perf_counter() - started
    engine = chosen.engine
    summary = {**engine.summary(), "cached": not cache.computed}
    graph_file = store.existing_file(engine.graph, "fp32")
    if graph_file is not None:  # the backbone's feature maps, for heatmaps made later without PyTorch
        summary["graph_file"] = str(graph_file)
    if verdict is not None:
        summary["int8_check"] = verdict

    def loader(split: str, shuffle: bool) -> DataLoader:
        return cache_loader(TensorDataset(tensors[split].features, tensors[split].labels), config, ranks, shuffle)

    head = model.head

    @torch.no_grad()
    def logits_of(features: torch.Tensor) -> torch.Tensor:
        head.eval()
        return head(features.to(device)).float().cpu()

    def test_logits() -> tuple[torch.Tensor, torch.Tensor]:
        return logits_of(tensors["test"].features), tensors["test"].labels

    precision_accuracy = None
    if engine.precision == "int8" and valid_reference is not None:
        reference = chosen.reference.precision

        def precision_accuracy() -> dict[str, float]:
            labels = tensors["valid"].labels
            return {
                f"valid_accuracy_{name}": float((logits_of(f.features).argmax(1) == labels).float().mean())
                for name, f in ((reference, valid_reference), ("int8", tensors["valid"]))
            }

    return TrainingInputs(
        head,
        loader("train", True),
        loader("valid", False),
        test_logits,
        True,
        seconds,
        {"extraction": summary},
        precision_accuracy,
        engine.graph.calibration if engine.precision == "int8" else None,
        lambda split: (tensors[split].features, tensors[split].labels),
        threads=1,
    )
