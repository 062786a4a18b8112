"""A request body to an RGB image, with every check an endpoint needs before the model sees anything.

Status codes (the error body is always ``{"error": {"code", "message"}}``):

- 400 ``empty_body``, ``corrupt_image`` (decodes partly or not at all), ``bad_base64``, ``bad_json``, ``bad_top_k``
- 413 ``body_too_large`` (checked by the app while the body streams in)
- 415 ``unsupported_media_type`` (content type not accepted) and ``not_an_image`` (the type says image, the bytes
  are not one of the accepted image formats)
- 422 ``image_too_large`` (more pixels than allowed: a decompression bomb), ``bad_aspect_ratio`` (one side more
  than 50 times the other) and ``animated_image``
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from kennel.data.images import to_rgb

IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "application/x-image", "image/webp", "image/gif", "image/bmp"}
)
JSON_TYPE = "application/json"
FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})  # what the bytes may be, whatever the type
MAX_TOP_K = 1000
MAX_ASPECT = 50  # longer side over shorter side: a 1 x 10,000 strip would be resized to 256 x 2,560,000


class InputError(ValueError):
    """A request the endpoint refuses; ``status`` and ``code`` go into the 4xx JSON answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def media_type(content_type: str | None) -> str:
    """``image/PNG; charset=x`` -> ``image/png``; empty when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_top_k(value: Any, default: int) -> int:
    """A top-k from a query string or JSON: a whole number from 1 to 1000 (more than the classes means all)."""
    if value is None or value == "":
        return default
    if isinstance(value, (bool, float)):
        raise InputError(400, "bad_top_k", f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {value!r}")
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InputError(400, "bad_top_k", f"top_k must be a whole number, got {str(value)[:40]!r}") from None
    if not 1 <= k <= MAX_TOP_K:
        raise InputError(400, "bad_top_k", f"top_k must be from 1 to {MAX_TOP_K}, got {k}")
    return k


def decode_image(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Bytes of a photo to an RGB image: any mode (16-bit, CMYK, palette) converted; the first frame of a GIF."""
    if not data:
        raise InputError(400, "empty_body", "the request has no image: send the photo's bytes as the body")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InputError(415, "not_an_image", "the body is not a JPEG, PNG, WebP, GIF, BMP or TIFF image") from None
        except Image.DecompressionBombError:
            raise InputError(422, "image_too_large", f"the image has more than {max_pixels:,} pixels") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(400, "corrupt_image", f"cannot read the image ({exc})") from None
        with image:
            if image.format not in FORMATS:
                raise InputError(415, "not_an_image", f"{image.format} images are not accepted")
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(
                    422, "image_too_large", f"the image is {width}x{height}, over the limit of {max_pixels:,} pixels"
                )
            if max(width, height) > MAX_ASPECT * min(width, height):
                raise InputError(
                    422,
                    "bad_aspect_ratio",
                    f"the image is {width}x{height}; sides may differ {MAX_ASPECT} times at most",
                )
            if getattr(image, "n_frames", 1) > 1 and image.format in ("GIF", "WEBP", "PNG"):
                raise InputError(422, "animated_image", "animated images are not accepted; send a single frame")
            try:
                if draft_size and image.format == "JPEG":
                    image.draft("RGB", (draft_size, draft_size))
                image.load()
                return to_rgb(image)
            except Image.DecompressionBombError:
                raise InputError(422, "image_too_large", f"the image has more than {max_pixels:,} pixels") from None
            except (OSError, SyntaxError, ValueError, TypeError) as exc:
                raise InputError(400, "corrupt_image", f"cannot decode the image ({exc})") from None


def parse_json(data: bytes) -> tuple[bytes, Any]:
    """``{"image": "<base64>", "top_k": 5}`` to the photo's bytes and the top_k given (or None)."""
    if not data:
        raise InputError(400, "empty_body", 'the request has no body: send {"image": "<base64>"}')
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(400, "bad_json", f"the body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        raise InputError(400, "bad_json", 'expected a JSON object {"image": "<base64 of the photo>", "top_k": 5}')
    text = payload["image"]
    if text.startswith("data:") and "," in text:  # a data URL from a browser
        text = text.split(",", 1)[1]
    try:
        image = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(400, "bad_base64", "the image field is not valid base64") from None
    return image, payload.get("top_k")


def read_body(data: bytes, content_type: str | None, max_pixels: int, draft_size: int | None = None):
    """A request body of the given content type to ``(RGB image, top_k or None)``."""
    kind = media_type(content_type)
    if kind == JSON_TYPE:
        data, top_k = parse_json(data)
        return decode_image(data, max_pixels, draft_size), top_k
    if kind in IMAGE_TYPES:
        return decode_image(data, max_pixels, draft_size), None
    accepted = ", ".join(sorted(IMAGE_TYPES | {JSON_TYPE}))
    raise InputError(
        415, "unsupported_media_type", f"content type {kind or '(none)'!r} is not accepted; use {accepted}"
    )
