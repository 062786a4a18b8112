"""Request bodies to images, and the dog and face verdicts, without HTTP."""

from __future__ import annotations

import base64
import json

import pytest
import torch
from helpers import encode
from PIL import Image

from kennel.serve.inputs import InputError, decode_image, parse_top_k, read_body
from kennel.serve.verdicts import DOG_CLASSES, FaceDetector, dog_verdict


def jpeg(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    return encode(Image.new(mode, size))


def code(call) -> tuple[int, str]:
    with pytest.raises(InputError) as refused:
        call()
    return refused.value.status, refused.value.code


def test_bodies_decode_to_rgb() -> None:
    image, top_k = read_body(jpeg(mode="CMYK"), "image/jpeg; charset=binary", 10_000)
    assert image.mode == "RGB" and image.size == (64, 48) and top_k is None
    body = json.dumps({"image": "data:image/jpeg;base64," + base64.b64encode(jpeg()).decode(), "top_k": 2})
    image, top_k = read_body(body.encode(), "application/json", 10_000)
    assert image.mode == "RGB" and top_k == 2


def test_refusals_have_their_codes() -> None:
    assert code(lambda: decode_image(b"", 100)) == (400, "empty_body")
    assert code(lambda: decode_image(jpeg()[:300], 10_000)) == (400, "corrupt_image")
    assert code(lambda: decode_image(b"plain text", 100)) == (415, "not_an_image")
    assert code(lambda: decode_image(jpeg((200, 100)), 10_000)) == (422, "image_too_large")
    assert code(lambda: decode_image(jpeg((2000, 10)), 100_000)) == (422, "bad_aspect_ratio")
    assert code(lambda: read_body(jpeg(), "video/mp4", 10_000)) == (415, "unsupported_media_type")
    assert code(lambda: read_body(b"[1]", "application/json", 10_000)) == (400, "bad_json")
    assert code(lambda: read_body(b'{"image": "@@"}', "application/json", 10_000)) == (400, "bad_base64")


@pytest.mark.parametrize(("value", "expected"), [(None, 5), ("", 5), ("3", 3), (7, 7), ("1000", 1000)])
def test_top_k_parses(value, expected: int) -> None:
    assert parse_top_k(value, 5) == expected


@pytest.mark.parametrize("value", ["0", "-2", "1001", "x", 2.0, True, [3], "9" * 5000])
def test_bad_top_k_is_refused(value) -> None:
    assert code(lambda: parse_top_k(value, 5)) == (400, "bad_top_k")


def test_dog_score_is_the_mass_of_the_dog_classes() -> None:
    logits = torch.full((1000,), -20.0)
    logits[200] = 10.0  # a Tibetan terrier
    verdict = dog_verdict(logits)
    assert verdict["is_dog"] and verdict["score"] > 0.99
    logits = torch.zeros(1000)
    expected = (DOG_CLASSES.stop - DOG_CLASSES.start) / 1000
    assert dog_verdict(logits) == {"is_dog": False, "score": pytest.approx(expected)}
    assert dog_verdict(logits, threshold=0.1)["is_dog"]
    assert dog_verdict(None) == {"is_dog": False, "score": 0.0, "available": False}


def test_faces_without_opencv_are_reported_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    assert FaceDetector()(Image.new("RGB", (64, 64))) == {"found": False, "count": 0, "available": False}
    assert FaceDetector(enabled=False)(Image.new("RGB", (64, 64)))["available"] is False


def test_no_face_in_a_blank_image_and_tiny_images_are_fine() -> None:
    detector = FaceDetector()
    assert detector(Image.new("RGB", (640, 480), (120, 120, 120))) == {"found": False, "count": 0}
    assert detector(Image.new("RGB", (10, 10)))["count"] == 0
