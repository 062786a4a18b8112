"""ONNX files of frozen modules: exported from PyTorch and checked against it, or quantized to int8 from one.

Both a model artifact (``model.onnx``) and the engine's cache of backbone exports are written here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kennel.errors import KennelError
from kennel.inference import machine

log = logging.getLogger(__name__)

OPSET = 18
TOLERANCE = 1e-3  # max abs difference between ONNX Runtime and PyTorch on a random batch
INPUT = "image"


class OnnxExportError(KennelError, RuntimeError):
    """An export failed or disagrees with PyTorch; the message names the module and the difference."""

    exit_code = 1


def _export(module: nn.Module, example: torch.Tensor, path: Path, outputs: list[str]) -> None:
    """The TorchScript-based exporter takes half a second for lite0 where the dynamo exporter takes seven; use
    it while this torch has it, and the dynamo exporter otherwise (or when it fails)."""
    import warnings

    common = {"input_names": [INPUT], "output_names": outputs, "opset_version": OPSET}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dynamic_axes = {name: {0: "batch"} for name in [INPUT, *outputs]}
            torch.onnx.export(module, (example,), str(path), dynamo=False, dynamic_axes=dynamic_axes, **common)
        return
    except Exception as exc:  # removed in a future torch, or an operator it cannot trace
        log.info("TorchScript ONNX export failed (%s); using the dynamo exporter", exc)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        module, (example,), str(path), dynamo=True, external_data=False, dynamic_shapes={INPUT: {0: batch}}, **common
    )


def export_onnx(module: nn.Module, input_size: int, path: Path, outputs: list[str], name: str) -> dict[str, Any]:
    """Export ``module`` (CPU, eval) to ``path`` as one self-contained fp32 file with a dynamic batch, verify it
    with ONNX Runtime on another batch size than the export's, and return what was checked."""
    module = module.eval()
    example = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    try:
        _export(module, example, path, outputs)
    except Exception as exc:
        raise OnnxExportError(f"ONNX export of {name} failed: {type(exc).__name__}: {exc}") from exc
    export_s = time.perf_counter() - started
    verified_batch = 3
    diff = verify_onnx(module, path, input_size, verified_batch)
    worst = max(diff.values())
    if worst > TOLERANCE:
        raise OnnxExportError(
            f"ONNX export of {name} disagrees with PyTorch: max abs difference {diff} exceeds {TOLERANCE}"
        )
    log.info("exported %s to ONNX in %.1f s (max abs diff %.2e)", name, export_s, worst)
    return {
        "opset": OPSET,
        "inputs": {INPUT: ["batch", 3, input_size, input_size]},
        "outputs": outputs,
        "dtype": "float32",
        "export_s": round(export_s, 3),
        "max_abs_diff": diff,
        "tolerance": TOLERANCE,
        "verified_batch": verified_batch,
        "torch_version": torch.__version__,
    }


@torch.no_grad()
def verify_onnx(module: nn.Module, path: Path, input_size: int, batch: int) -> dict[str, float]:
    """Max abs difference per output between ONNX Runtime and PyTorch on a random batch."""
    import onnxruntime as ort

    images = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(1))
    expected = module(images)
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = session.run(names, {INPUT: images.numpy()})
    return {name: float((torch.from_numpy(g) - e).abs().max()) for name, g, e in zip(names, got, expected, strict=True)}


class _Batches:
    """ONNX Runtime's calibration reader over our batches (its interface: ``get_next`` until None). It times the
    calibration pass: from the first batch it hands out to the end, ``count`` batches in ``seconds``."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = iter(batches)
        self.count, self.seconds, self._started = 0, 0.0, None

    def get_next(self) -> dict[str, np.ndarray] | None:
        self._started = self._started or time.perf_counter()
        batch = next(self._batches, None)
        if batch is None:
            self.seconds = time.perf_counter() - self._started
            return None
        self.count += 1
        return {INPUT: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:  # part of the interface; one pass is all MinMax calibration needs
        pass


def quantize_int8(fp32: Path, path: Path, calibration: Iterable[np.ndarray]) -> dict[str, Any]:
    """Static int8 quantization of ``fp32`` into ``path``: QDQ, per-channel int8 weights, uint8 activations whose
    ranges come from running the fp32 model over ``calibration`` (the job's own training photos). On a CPU whose
    int8 products saturate (:func:`~kennel.inference.machine.saturates_int8`) the weights take 7 bits: with 8,
    a small network's int8 features agreed with fp32 on 97% of a head's answers on an AVX2 EPYC, not 99%."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    started = time.perf_counter()
    seven_bits = machine.saturates_int8()
    prepared = path.with_name(path.name + ".pre.onnx")
    try:
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            source = prepared
        except Exception as exc:  # optimisation before quantization helps, but is not required
            log.info("ONNX pre-processing for quantization failed (%s); quantizing the export as it is", exc)
            source = fp32
        batches = _Batches(calibration)
        quantize_static(
            str(source),
            str(path),
            batches,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=seven_bits,
        )
    except Exception as exc:
        raise OnnxExportError(f"int8 quantization of {fp32.name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        prepared.unlink(missing_ok=True)
    return {
        "dtype": "int8",
        "quantize_s": round(time.perf_counter() - started, 3),
        "calibration_batches": batches.count,
        "calibration_s": round(batches.seconds, 3),  # of quantize_s
        "method": "static QDQ, MinMax" + (", 7-bit weights" if seven_bits else ""),
    }
