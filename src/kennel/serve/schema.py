"""What the endpoint's OpenAPI document (``/docs``) says of its answers, errors, request bodies and token."""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field


class Label(BaseModel):
    label: str
    probability: float
    index: int


class Answer(BaseModel):
    """What ``/invocations`` and ``/predict`` answer (``available: false`` marks a verdict that could not be made)."""

    predictions: list[Label]
    dog: dict[str, float | bool] = Field(examples=[{"is_dog": True, "score": 0.97}])
    human_face: dict[str, int | bool] = Field(examples=[{"found": False, "count": 0, "searched": False}])
    model: dict[str, str | int] = Field(examples=[{"backbone": "tf_efficientnet_lite0", "classes": 133}])
    latency_ms: float


class ErrorBody(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": text}
    for status, text in {
        400: "empty body, corrupt image, bad base64 or JSON, bad top_k",
        406: "an Accept the model does not answer (kennel's models: JSON; handlers: what their output_fn writes)",
        413: "body over the size limit",
        415: "content type not accepted, or the bytes are not an image",
        422: "too many pixels, extreme aspect ratio, or an animated image",
        500: "a user's handler failed on the request (its message in the answer)",
        503: "overloaded, timed out, or the model is not serving yet (see Retry-After)",
    }.items()
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{kind: _BINARY for kind in ("image/jpeg", "image/png", "image/webp", "image/gif", "application/x-image")},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "base64"}, "top_k": {"type": "integer"}},
                }
            },
        },
    }
}


# Declares the token in the OpenAPI document, so that /docs has an Authorize button; kennel.serve.guard checks it.
TOKEN = [
    Depends(HTTPBearer(auto_error=False, description="the endpoint's token, when it has one (kennel serve --token)"))
]
