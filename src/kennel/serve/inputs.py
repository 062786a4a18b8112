"""A request body to an RGB image, with every check an endpoint needs before the model sees anything.

Status codes (the error body is always ``{"error": {"code", "message"}}``):

- 400 ``empty_body``, ``corrupt_image`` (decodes partly or not at all), ``bad_base64``, ``bad_json``, ``bad_top_k``
- 413 ``body_too_large`` (checked by the app while the body streams in)
- 415 ``unsupported_media_type`` (content type not accepted) and ``not_an_image`` (the type says image, the bytes
  are not one of the accepted image formats)
- 422 ``image_too_large`` (more pixels than allowed: a decompression bomb, or a photo far larger than the model
  reads; the message says both sizes), ``bad_aspect_ratio`` (one side more than 50 times the other) and
  ``animated_image``
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
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
SLOT_PIXELS = 13_000_000  # a 12 Mpx phone photo takes one decode slot, a 24 Mpx camera photo two


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


class DecodeSlots:
    """At most ``count`` decodes at once, so a burst of huge images is decoded a few at a time instead of holding
    all their full-size buffers at once. An image takes one slot per ``slot_pixels`` (at least one, at most all).
    ``after_large`` is called when the last image of more than ``slot_pixels`` in flight is done: the moment to
    give its freed memory back to the system."""

    def __init__(
        self, count: int, slot_pixels: int = SLOT_PIXELS, after_large: Callable[[], object] | None = None
    ) -> None:
        self.count = max(1, count)
        self.slot_pixels = slot_pixels
        self.after_large = after_large
        self._free = threading.BoundedSemaphore(self.count)
        self._gathering = threading.Lock()  # two requests each holding part of what they need would wait forever
        self._large = 0  # large images waiting or decoding
        self._counting = threading.Lock()

    def slots_for(self, pixels: int) -> int:
        return min(self.count, max(1, -(-pixels // self.slot_pixels)))

    def _count_large(self, change: int) -> int:
        with self._counting:
            self._large += change
            return self._large

    @contextlib.contextmanager
    def take(self, pixels: int) -> Iterator[None]:
        """Hold the slots an image of ``pixels`` needs while the block runs."""
        need, large = self.slots_for(pixels), pixels > self.slot_pixels
        if large:
            self._count_large(+1)
        try:
            if need == 1:
                self._free.acquire()
            else:
                with self._gathering:
                    for _ in range(need):
                        self._free.acquire()
            try:
                yield
            finally:
                for _ in range(need):
                    self._free.release()
        finally:
            if large and self._count_large(-1) == 0 and self.after_large is not None:
                self.after_large()


def too_large(message: str, model_side: int | None) -> InputError:
    if model_side:
        message += f"; the model reads only {model_side} px on the short side, so resize the photo before sending it"
    return InputError(422, "image_too_large", message)


def open_image(data: bytes, max_pixels: int, model_side: int | None = None) -> Image.Image:
    """The photo in ``data`` opened (its header read, nothing decoded yet) and checked: format, size, frames."""
    if not data:
        raise InputError(400, "empty_body", "the request has no image: send the photo's bytes as the body")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InputError(415, "not_an_image", "the body is not a JPEG, PNG, WebP, GIF, BMP or TIFF image") from None
        except Image.DecompressionBombError:
            raise too_large(f"the image has more than {max_pixels:,} pixels", model_side) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(400, "corrupt_image", f"cannot read the image ({exc})") from None
    if image.format not in FORMATS:
        raise InputError(415, "not_an_image", f"{image.format} images are not accepted")
    width, height = image.size
    if width * height > max_pixels:
        raise too_large(
            f"the image is {width}x{height} ({width * height:,} pixels), over the limit of {max_pixels:,}", model_side
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(
            422, "bad_aspect_ratio", f"the image is {width}x{height}; sides may differ {MAX_ASPECT} times at most"
        )
    if getattr(image, "n_frames", 1) > 1 and image.format in ("GIF", "WEBP", "PNG"):
        raise InputError(422, "animated_image", "animated images are not accepted; send a single frame")
    return image


def shrink(image: Image.Image, short_side: int) -> Image.Image:
    """``image`` with its short side brought down to twice ``short_side`` when it is larger still. The model's own
    resize from there gives what it would give from the full image (bicubic with Pillow's reducing gap measured
    closest, for bilinear and bicubic models alike), and the face search, on a copy at most 480 px long, sees
    the same too."""
    target = 2 * short_side
    width, height = image.size
    if min(width, height) < 2 * target:
        return image
    scale = target / min(width, height)
    size = (max(target, round(width * scale)), max(target, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def load_rgb(image: Image.Image, model_side: int | None = None) -> Image.Image:
    """Decode an opened image to RGB: a JPEG at the smallest scale that keeps its short side ``model_side`` or
    more, any other format at full size and then shrunk at once, the full-size buffer released before returning."""
    with image:  # lets go of the request's bytes once decoded; the pixels stay
        if model_side and image.format in ("JPEG", "MPO"):  # an MPO is a camera's JPEG with more pictures after it
            image.draft("RGB", (model_side, model_side))
        image.load()
    rgb = to_rgb(image)
    small = shrink(rgb, model_side) if model_side else rgb
    if small is not image:
        image.close()  # the full-size pixels go now, not when the last reference to the file object does
    return small


def decode_image(
    data: bytes,
    max_pixels: int,
    model_side: int | None = None,
    slot: Callable[[int], AbstractContextManager[Any]] | None = None,
) -> Image.Image:
    """Bytes of a photo to an RGB image: any mode (16-bit, CMYK, palette) converted; the first frame of a GIF.
    ``model_side`` is the model's resize size (the short side it scales a photo to): a large image is decoded or
    shrunk to what the model can use (see :func:`load_rgb`); ``slot(pixels)`` is held while it decodes (see
    :class:`DecodeSlots`)."""
    image = open_image(data, max_pixels, model_side)
    with slot(image.width * image.height) if slot else contextlib.nullcontext():
        try:
            return load_rgb(image, model_side)
        except Image.DecompressionBombError:
            raise too_large(f"the image has more than {max_pixels:,} pixels", model_side) from None
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


def read_body(
    data: bytes,
    content_type: str | None,
    max_pixels: int,
    model_side: int | None = None,
    slot: Callable[[int], AbstractContextManager[Any]] | None = None,
):
    """A request body of the given content type to ``(RGB image, top_k or None)`` (arguments as
    :func:`decode_image`'s)."""
    kind = media_type(content_type)
    if kind == JSON_TYPE:
        data, top_k = parse_json(data)
        return decode_image(data, max_pixels, model_side, slot), top_k
    if kind in IMAGE_TYPES:
        return decode_image(data, max_pixels, model_side, slot), None
    accepted = ", ".join(sorted(IMAGE_TYPES | {JSON_TYPE}))
    raise InputError(
        415, "unsupported_media_type", f"content type {kind or '(none)'!r} is not accepted; use {accepted}"
    )
