"""What a trained job leaves: its test evaluation and its model artifact, written through its :class:`JobDir`.
A write that fails for want of space fails the job; an export the exporter cannot do keeps the PyTorch model."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import torch

from kennel.config import TrainConfig
from kennel.jobs import JobRecord

log = logging.getLogger(__name__)


def choose_head(record: JobRecord, head: str, inputs, classes: int) -> None:
    """Fit the logistic-regression head on the cached features and keep it where asked (``lbfgs``) or, for
    ``best``, where it is clearly better on valid than the loop's head (more than chance on the same photos; else
    the loop's stays). The record says which head the model has (``params.head``) and what each scored on valid."""
    from kennel.heads import clearly_better, fit_logistic, load_into

    train_x, train_y = inputs.split_features("train")
    valid_x, valid_y = inputs.split_features("valid")
    fit = fit_logistic(train_x, train_y, valid_x, valid_y, classes)
    sgd = record.metrics.get("best_valid_accuracy")
    head_module = inputs.module
    head_module.eval()
    with torch.no_grad():
        device = next(head_module.parameters()).device
        loop_predictions = head_module(valid_x.to(device)).float().cpu().argmax(1)
    better, counts = clearly_better(fit.valid_predictions, loop_predictions, valid_y)
    keep = head == "lbfgs" or sgd is None or better
    record.metrics.update(lbfgs_valid_wins=counts["wins"], lbfgs_valid_losses=counts["losses"])
    if keep:
        load_into(inputs.module, fit)
    record.params["head"] = "lbfgs" if keep else "sgd"
    record.metrics.update(
        lbfgs_valid_accuracy=fit.valid_accuracy,
        lbfgs_l2=fit.l2,
        head_valid_accuracy=fit.valid_accuracy if keep else sgd,
    )
    log.info(
        "head: %s (valid top-1: logistic regression %.4f with l2 %g in %.1f s, the loop's %s)",
        record.params["head"],
        fit.valid_accuracy,
        fit.l2,
        fit.seconds,
        f"{sgd:.4f}" if sgd is not None else "none",
    )


def save_results(
    record: JobRecord, config: TrainConfig, model, layout, preprocessing, inputs, heatmaps: bool = True
) -> bool:
    """Evaluate the best weights on the test split, then save the artifact (ONNX exports with it); the record
    names the artifact once it is whole. With ``heatmaps``, the report gallery's are made now, on ``model``.
    Returns whether the report has a gallery whose heatmaps are still to make (``heatmaps`` off)."""
    from kennel.artifact import OnnxExportError, save_artifact
    from kennel.evaluation import summarize

    result = None
    if config.evaluate_test:
        logits, targets = inputs.test_logits()
        files = [str(p) for p, _ in layout["test"].files]
        result = summarize(logits, targets, layout.class_names, files)
        record.folder.write_evaluation(result)
        record.metrics["test_accuracy"] = result.top1
        record.metrics["test_top5"] = result.top5
    record.engine = dict(inputs.engine)
    check = inputs.engine.get("extraction", {}).get("int8_check") or {}
    if inputs.int8_calibration is not None and check.get("ok"):
        record.metrics["int8_ok"] = 1.0  # int8 passed its check on valid: the endpoint's auto may run int8 too

    def save(export_onnx: bool) -> Path:
        return save_artifact(
            model.eval(),
            layout.class_names,
            preprocessing,
            record.folder.model,
            metrics=dict(record.metrics),
            class_folders=list(layout.classes),
            export_onnx=export_onnx,
            int8_calibration=inputs.int8_calibration if export_onnx else None,
        )

    try:
        artifact = save(config.export_onnx)
    except OnnxExportError as exc:
        # A full disk is no export problem: the job fails, saying why. Some exporters turn the short write into
        # a parse error of the file they wrote, so the free space is asked too.
        full = write_failure(exc) or out_of_space(record.folder.model, model, int8=inputs.int8_calibration is not None)
        if full is not None:
            raise full from exc
        # Never lose a trained model to an export problem: keep the PyTorch weights, say why ONNX is missing.
        log.warning("ONNX export failed for %s (%s); the artifact has PyTorch weights only", record.id, exc)
        record.metrics["onnx_export_failed"] = 1.0
        artifact = save(False)
    record.artifact = str(artifact)
    # A trial's page has no gallery (kennel report JOB makes it); a job without mistakes has nothing to show.
    gallery = result is not None and bool(result.mistakes) and record.study is None
    if heatmaps and gallery:
        # On the model in memory, now that it is saved: the report then needs no model.
        from kennel.report.gallery import save_heatmaps

        save_heatmaps(record.path, model, layout.class_names, preprocessing, result.mistakes)
    record.save()
    return gallery and not heatmaps


def out_of_space(folder: Path, model: torch.nn.Module, int8: bool) -> OSError | None:
    """ENOSPC when the disk of ``folder`` cannot hold the artifact with its exports, measured after the failed
    save gave its space back: the weights, the fp32 ONNX file of the same size, and for int8 the quantizer's
    own fp32 copy and the int8 file (a quarter)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    needed = weights * (2 + (1.25 if int8 else 0))
    free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    if free >= needed:
        return None
    return OSError(
        errno.ENOSPC,
        f"{os.strerror(errno.ENOSPC)} ({free / 2**20:.1f} MiB free; the model with its ONNX exports needs "
        f"about {needed / 2**20:.1f} MiB)",
        str(folder),
    )


def write_failure(error: BaseException) -> OSError | None:
    """The OSError (no space left, a read-only folder) behind ``error``, if a failed write caused it."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None
