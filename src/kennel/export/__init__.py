"""A model artifact in the forms other platforms load (``kennel export``): ``sagemaker``, a model.tar.gz for
SageMaker's PyTorch serving container; ``onnx``, the ONNX model with its labels and preprocessing as metadata;
``mlflow``, a pyfunc model for ``mlflow models serve``.

Every format runs the same self-contained handler (:mod:`kennel.export.standalone`) on the artifact's ONNX model,
so what it writes needs ONNX Runtime, Pillow and NumPy, not kennel or PyTorch. The formats are entries of
:data:`EXPORT_FORMATS`; importing this package registers them, and imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kennel.errors import UsageError
from kennel.export import mlflow, onnx, sagemaker  # noqa: F401  (each registers its format)
from kennel.export.formats import EXPORT_FORMATS, ExportFormat
from kennel.export.target import check_target, staged

__all__ = ["EXPORT_FORMATS", "ExportFormat", "Exported", "export_format", "export_model"]


@dataclass(frozen=True)
class Exported:
    """What an export wrote: ``files`` relative to ``folder``; ``usage`` says how to use them."""

    format: str
    folder: Path
    files: list[Path]
    usage: str


def export_format(name: str) -> ExportFormat:
    """The format called ``name``; a :class:`UsageError` that lists the known ones for any other name."""
    try:
        return EXPORT_FORMATS.get(name)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None


def export_model(artifact_dir: Path | str, format: str, out: Path | str, force: bool = False) -> Exported:
    """Export the artifact in ``artifact_dir`` as ``format`` into the folder ``out``, which must be empty or new
    (``force`` replaces it). ``out`` appears whole when the export is done, or not at all."""
    from kennel.artifact import ONNX_FILE, load_artifact

    chosen = export_format(format)
    out = Path(out).expanduser()
    artifact = load_artifact(artifact_dir, with_model=False)
    check_target(out, artifact.path, force)
    if artifact.onnx_path is None:
        raise UsageError(
            f"{artifact.path} has no ONNX model ({ONNX_FILE}): the job that made it skipped the export (tuning "
            "trials do). Train it again with --set export_onnx=true, or retrain a study's best from its best.yaml"
        )
    with staged(out) as folder:
        chosen.write(artifact, folder)
        files = sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())
    return Exported(format, out, files, chosen.usage.format(out=out))
