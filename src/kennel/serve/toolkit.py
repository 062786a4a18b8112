"""The SageMaker PyTorch inference toolkit's default handlers, for the ones an ``inference.py`` leaves out.

- ``model_fn``: TorchScript ``model.pt`` in the model folder (else its one ``.pt``/``.pth`` file), on the GPU
  when there is one. TorchScript only: kennel never unpickles a file it is handed (a user's own ``model_fn`` may
  ``torch.load`` what it saved; that is the user's code).
- ``input_fn``: ``application/json`` and ``text/csv`` to a float32 tensor, ``application/x-npy`` and
  ``application/x-npz`` (a sparse matrix, as scipy saves one, or one array) to a tensor of their own type; any
  other type is a 415. Object arrays, which only unpickling could read, are refused.
- ``predict_fn``: the model in ``eval()`` mode under ``torch.no_grad()``, the input moved to the model's device.
- ``output_fn``: JSON, CSV or NPY, the first of them the ``Accept`` header names; ``*/*`` or none means
  ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (JSON unless set); anything else is a 406.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kennel.errors import UsageError
from kennel.serve.inputs import InputError, media_type
from kennel.serve.served import JSON_TYPE, accepted

CSV_TYPE, NPY_TYPE, NPZ_TYPE = "text/csv", "application/x-npy", "application/x-npz"
UTF8_TYPES = (JSON_TYPE, CSV_TYPE)  # handed to the handlers as text, as the toolkit does
MODEL_FILE = "model.pt"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"


class HandlerError(InputError):
    """A request a handler refused (4xx) or failed on (5xx); ``status``, ``code`` and ``message`` go into the
    answer's JSON as every other refusal's."""


def default_accept() -> str:
    return os.environ.get(DEFAULT_ACCEPT_ENV) or JSON_TYPE


def device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- model_fn ---------------------------------------------------------------------------------------------------


def model_file(model_dir: Path | str) -> Path:
    """The file the default ``model_fn`` loads: ``model.pt``, else the folder's one ``.pt`` or ``.pth`` file."""
    folder = Path(model_dir)
    if (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE
    found = (
        sorted(p for p in folder.glob("*") if p.suffix in (".pt", ".pth") and p.is_file()) if folder.is_dir() else []
    )
    if len(found) == 1:
        return found[0]
    seen = f"{len(found)} .pt/.pth files" if found else "no model.pt"
    raise UsageError(
        f"{folder}: {seen}; the default model_fn loads a TorchScript model.pt (torch.jit.save), or write a model_fn"
    )


def default_model_fn(model_dir: str) -> Any:
    import torch

    path = model_file(model_dir)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, and still what SageMaker's default loads
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location=device())
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"{path}: not a TorchScript model ({first}); save it with torch.jit.save, or write a model_fn that loads it"
        ) from None
    return model.to(device())


# --- input_fn ---------------------------------------------------------------------------------------------------


def _bad(kind: str, exc: Exception) -> HandlerError:
    return HandlerError(400, "bad_input", f"the body is not valid {kind} ({type(exc).__name__}: {exc})")


def _from_json(text: str | bytes) -> np.ndarray:
    try:
        return np.array(json.loads(text), dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise _bad("JSON of numbers", exc) from None


def _from_csv(text: str | bytes) -> np.ndarray:
    try:
        text = text.decode() if isinstance(text, bytes) else text
        return np.genfromtxt(io.StringIO(text), delimiter=",", dtype=np.float32)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise _bad("CSV of numbers", exc) from None


def _from_npy(data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _bad("NPY (object arrays are refused: they need unpickling)", exc) from None


def _from_npz(data: bytes) -> np.ndarray:
    import scipy.sparse

    try:
        return scipy.sparse.load_npz(io.BytesIO(data)).toarray()
    except (ValueError, OSError, KeyError, EOFError):
        pass
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = [archive[name] for name in archive.files]
    except (ValueError, OSError, EOFError) as exc:
        raise _bad("NPZ", exc) from None
    if len(arrays) != 1:
        raise HandlerError(
            400, "bad_input", f"an NPZ body holds one array or a sparse matrix, not {len(arrays)} arrays"
        )
    return arrays[0]


DECODERS = {JSON_TYPE: _from_json, CSV_TYPE: _from_csv, NPY_TYPE: _from_npy, NPZ_TYPE: _from_npz}


def default_input_fn(input_data: str | bytes, content_type: str) -> Any:
    import torch

    kind = media_type(content_type)
    decode = DECODERS.get(kind)
    if decode is None:
        offered = ", ".join(DECODERS)
        raise HandlerError(
            415,
            "unsupported_media_type",
            f"content type {kind or '(none)'!r} is not supported by the default input_fn ({offered}); "
            "write an input_fn for it",
        )
    array = decode(input_data)
    try:
        tensor = torch.from_numpy(array) if kind in (NPY_TYPE, NPZ_TYPE) else torch.FloatTensor(array)
    except TypeError as exc:
        raise _bad(kind, exc) from None
    return tensor.to(device())


# --- predict_fn -------------------------------------------------------------------------------------------------


def model_device(model: Any) -> Any:
    import torch

    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def default_predict_fn(data: Any, model: Any) -> Any:
    import torch

    if hasattr(model, "eval"):
        model.eval()
    with torch.no_grad():
        return model(data.to(model_device(model)) if isinstance(data, torch.Tensor) else data)


# --- output_fn --------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def _to_json(prediction: Any) -> bytes:
    return json.dumps(prediction, default=_plain).encode()


def _to_csv(prediction: Any) -> bytes:
    stream = io.StringIO()
    np.savetxt(stream, np.asarray(prediction), delimiter=",", fmt="%s")
    return stream.getvalue().encode()


def _to_npy(prediction: Any) -> bytes:
    stream = io.BytesIO()
    np.save(stream, np.asarray(prediction), allow_pickle=False)
    return stream.getvalue()


ENCODERS = {JSON_TYPE: _to_json, CSV_TYPE: _to_csv, NPY_TYPE: _to_npy}


def default_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    import torch

    if isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().cpu().numpy().tolist()
    for kind in accepted(accept):
        if kind == "*/*":
            kind = default_accept()
        if kind in ENCODERS:
            return ENCODERS[kind](prediction), kind
    offered = ", ".join(ENCODERS)
    raise HandlerError(
        406,
        "not_acceptable",
        f"accept {accept!r} is not produced by the default output_fn ({offered}); write an output_fn for it",
    )
