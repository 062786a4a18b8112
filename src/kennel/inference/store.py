"""The engine's ONNX files in the cache: built once per backbone, weights and precision, kept with their checksum,
and rebuilt (saying so) when a file is missing or does not match it."""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from kennel.atomic import atomic_path, atomic_write_json
from kennel.home import cache_dir
from kennel.inference.export import OnnxExportError, export_onnx, quantize_int8
from kennel.inference.graph import FrozenGraph

log = logging.getLogger(__name__)


def store_dir() -> Path:
    return cache_dir() / "engine"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slug(graph: FrozenGraph) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", graph.architecture)[:60]


def _path(graph: FrozenGraph, precision: str) -> Path:
    key = graph.identity + (f":calibration={graph.calibration_id}" if precision == "int8" else "")
    return store_dir() / f"{_slug(graph)}-{hashlib.sha256(key.encode()).hexdigest()[:16]}-{precision}.onnx"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def built(graph: FrozenGraph, precision: str) -> bool:
    """Whether ``graph``'s ``precision`` file is there already (its own, or whole in the cache)."""
    return precision in graph.onnx_files or _intact(_path(graph, precision)) is None


def existing_file(graph: FrozenGraph, precision: str) -> Path | None:
    """``graph``'s ``precision`` file where one is there already (its own, or the cache's), without building or
    checking it: what a job names for readers of its record (a report's heatmaps read the backbone's)."""
    path = graph.onnx_files.get(precision) or _path(graph, precision)
    return path if path.is_file() else None


def build_seconds(graph: FrozenGraph, precision: str, batches: int) -> float | None:
    """How long building ``graph``'s ``precision`` file calibrated on ``batches`` batches takes here, by its own
    build where it has one, else by the latest of its architecture's (an int8 file is built again for each
    calibration): the build without its calibration pass, and that pass scaled to ``batches``. None where none was
    built. Only int8 builds are counted: the export they start from is shared."""
    if precision != "int8":
        return None
    own = _sidecar(_path(graph, precision))
    others = sorted(store_dir().glob(f"{glob.escape(_slug(graph))}-*-{precision}.json"), key=_modified, reverse=True)
    for path in [own, *others]:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        seconds, calibration, count = (record.get(k) for k in ("quantize_s", "calibration_s", "calibration_batches"))
        if not isinstance(seconds, (int, float)):
            continue
        if isinstance(calibration, (int, float)) and isinstance(count, int) and count > 0:
            return float(seconds - calibration + calibration / count * batches)
        return float(seconds)
    return None


def _intact(path: Path) -> str | None:
    """None when ``path`` and its record agree; otherwise what is wrong with it."""
    if not path.is_file():
        return "missing"
    try:
        record = json.loads(_sidecar(path).read_text())
    except (OSError, json.JSONDecodeError):
        return "its record is missing or unreadable"
    if record.get("sha256") != sha256(path):
        return "its checksum does not match (a damaged or partly written file)"
    return None


def onnx_file(graph: FrozenGraph, precision: str) -> Path:
    """The ONNX file that runs ``graph`` at ``precision`` ("fp32" or "int8"): the graph's own (an artifact's), or
    the cache's, built now when it is missing or damaged. Raises :class:`OnnxExportError` when it cannot be."""
    if precision in graph.onnx_files:
        return graph.onnx_files[precision]
    if not graph.exportable:
        raise OnnxExportError(f"{graph.architecture} has no {precision} ONNX file")
    if precision == "int8" and graph.calibration is None:
        raise OnnxExportError("int8 needs calibration photos (a training job provides its own)")
    path = _path(graph, precision)
    problem = _intact(path)
    if problem is None:
        return path
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):  # parallel trials build it once; the others wait and use it
        problem = _intact(path)
        if problem is None:
            return path
        if problem != "missing":
            log.warning("the cached ONNX export %s is unusable: %s; rebuilding it", path.name, problem)
        details = _build(graph, precision, path)
        atomic_write_json(_sidecar(path), {"identity": graph.identity, "sha256": sha256(path), **details})
    return path


def _build(graph: FrozenGraph, precision: str, path: Path) -> dict[str, Any]:
    with atomic_path(path) as tmp:
        if precision == "fp32":
            details = export_onnx(graph.module(), graph.input_size, tmp, list(graph.outputs), graph.architecture)
        elif precision == "int8":
            details = quantize_int8(onnx_file(graph, "fp32"), tmp, graph.calibration())
            details["calibration"] = graph.calibration_id
        else:
            raise OnnxExportError(f"no ONNX build for precision {precision!r}")
    return details
