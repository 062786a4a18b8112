"""The SageMaker inference-toolkit handler functions, on the same artifact and code as ``kennel serve``.

Put this module's functions in ``code/inference.py`` of a SageMaker PyTorch model (or import them there) with
the artifact folder as the model directory. Bad input raises :class:`~kennel.serve.inputs.InputError`, whose
``status`` and ``to_dict()`` give the same 4xx answer as the HTTP endpoint.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kennel.serve import Endpoint, Prepared
from kennel.serve.inputs import InputError

JSON_ACCEPT = "application/json"

# input_fn gets no model argument in the toolkit's signature, so the model model_fn loaded last prepares inputs.
_loaded: list[Endpoint] = []


def model_fn(model_dir: str) -> Endpoint:
    """Load the artifact in ``model_dir`` (an artifact folder, or a folder holding ``model/``)."""
    from kennel.artifact import is_artifact

    folder = model_dir if is_artifact(model_dir) else f"{model_dir}/model"
    _loaded[:] = [Endpoint.load(folder)]
    return _loaded[0]


def input_fn(request_body: bytes | str, request_content_type: str) -> Prepared:
    """The photo's bytes or JSON ``{"image": base64, "top_k": k}`` to a prepared image (validated, decoded)."""
    body = request_body.encode() if isinstance(request_body, str) else bytes(request_body)
    if not _loaded:
        raise RuntimeError("model_fn has not been called")
    return _loaded[0].prepare(body, request_content_type)


def predict_fn(data: Prepared, model: Endpoint) -> dict[str, Any]:
    """The response dict for one prepared image: predictions, dog, human_face, model, latency_ms."""
    started = time.perf_counter()
    return model.respond(model.predict_one(data), data, started)


def output_fn(prediction: dict[str, Any], accept: str = JSON_ACCEPT) -> tuple[str, str]:
    """JSON, the only answer type; ``(body, content type)`` as the toolkit expects."""
    kind = (accept or JSON_ACCEPT).split(";", 1)[0].strip().lower()
    if kind not in (JSON_ACCEPT, "*/*", "application/*"):
        raise InputError(406, "not_acceptable", f"accept {kind!r} is not offered; use {JSON_ACCEPT}")
    return json.dumps(prediction), JSON_ACCEPT
