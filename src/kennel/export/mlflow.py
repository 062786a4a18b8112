"""``--format mlflow``: an MLflow pyfunc model (models-from-code) that ``mlflow models serve --env-manager local``
runs: the labelled ONNX model as its artifact, ``inference.py`` and ``mlflow_model.py`` as its code, and its pip
requirements said outright (ONNX Runtime, Pillow, NumPy), not inferred from this environment."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.export.formats import EXPORT_FORMATS, ExportFormat
from kennel.export.onnx import write_labelled_onnx

if TYPE_CHECKING:
    from kennel.artifact import Artifact

# The names standalone/mlflow_model.py reads.
IMAGE_COLUMN = "image"
MODEL_ARTIFACT = "model"
TOP_K_PARAM = "top_k"
DEFAULT_TOP_K = 5


def signature():
    """One binary ``image`` column (base64 in JSON requests, which the scoring server decodes) and ``top_k``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", IMAGE_COLUMN)]),
        params=ParamSchema([ParamSpec(TOP_K_PARAM, "long", DEFAULT_TOP_K)]),
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """Without MLflow's progress bar for copying the one small artifact, and without its advice to save an input
    example: running the model at save time would only load it twice."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def write_pyfunc(artifact: Artifact, folder: Path) -> None:
    """The model in ``folder``, which must be empty (MLflow refuses to write into anything else)."""
    import mlflow.pyfunc

    from kennel import __version__
    from kennel.export.standalone import INFERENCE, MLFLOW_MODEL, REQUIREMENTS
    from kennel.export.standalone.inference import MODEL_FILE

    with tempfile.TemporaryDirectory(prefix="kennel-mlflow-") as scratch, _quiet():
        model = Path(scratch) / MODEL_FILE
        write_labelled_onnx(artifact, model)
        mlflow.pyfunc.save_model(
            path=str(folder),
            python_model=str(MLFLOW_MODEL),
            artifacts={MODEL_ARTIFACT: str(model)},
            code_paths=[str(INFERENCE)],
            pip_requirements=list(REQUIREMENTS),
            signature=signature(),
            metadata={"backbone": artifact.info.backbone, "kennel_version": __version__},
        )


EXPORT_FORMATS.register(
    "mlflow",
    ExportFormat(
        write_pyfunc,
        summary="an MLflow pyfunc model (ONNX Runtime inside) for mlflow models serve or mlflow.pyfunc.load_model",
        usage="mlflow models serve -m {out} --env-manager local; POST /invocations "
        '{{"dataframe_split": {{"columns": ["image"], "data": [[base64]]}}, "params": {{"top_k": 5}}}}',
    ),
)
