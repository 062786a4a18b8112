"""Request bodies to images, and the dog and face verdicts, without HTTP."""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from helpers import encode
from PIL import Image

from kennel import allocator
from kennel.preprocessing import Preprocessing
from kennel.serve.inputs import DecodeSlots, InputError, decode_image, parse_top_k, read_body
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


def smooth_photo(size: tuple[int, int]) -> Image.Image:
    """Detail at every scale the model reads, none finer: random colours blown up with bicubic."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)


SMALL_MODEL = {"input_size": 56, "resize_size": 64}  # shrinks from a short side of 256, as 256 does from 1024


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_a_large_png_is_shrunk_to_what_the_model_reads(interpolation: str) -> None:
    full = smooth_photo((640, 480))
    preprocessing = Preprocessing(**SMALL_MODEL, interpolation=interpolation)
    decoded = decode_image(encode(full, "PNG", compress_level=1), 1_000_000, preprocessing.resize_size)
    assert decoded.size == (171, 128)  # short side twice the model's resize
    transform = preprocessing.eval_transform()
    difference = (transform(decoded) - transform(full)).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.1  # normalised units: about 1/255 on average


def test_images_the_model_can_use_as_they_are_are_kept() -> None:
    big = encode(smooth_photo((640, 480)), "PNG", compress_level=1)
    assert decode_image(encode(smooth_photo((250, 200)), "PNG"), 1_000_000, 64).size == (250, 200)
    assert decode_image(big, 1_000_000).size == (640, 480)  # no model size given: nothing to shrink to
    grey = decode_image(encode(smooth_photo((640, 480)).convert("L"), "PNG"), 1_000_000, 64)
    assert grey.mode == "RGB" and grey.size == (171, 128)


def test_a_large_jpeg_decodes_at_a_reduced_scale() -> None:
    assert decode_image(jpeg((4000, 3000)), 20_000_000, 256).size == (500, 375)  # 1/8: short side still >= 256
    photo = Image.new("RGB", (4000, 3000))
    mpo = encode(photo, "MPO", save_all=True, append_images=[photo])  # what some cameras write
    assert decode_image(mpo, 20_000_000, 256).size == (500, 375)


def test_too_large_says_the_limit_and_what_the_model_reads() -> None:
    with pytest.raises(InputError) as refused:
        decode_image(jpeg((200, 100)), 10_000, 256)
    message = refused.value.message
    assert refused.value.status == 422 and refused.value.code == "image_too_large"
    assert "200x100" in message and "10,000" in message and "256 px" in message and "resize" in message


class InFlight:
    """Counts the blocks running at once; ``meet`` of them wait for each other, so that many are surely in."""

    def __init__(self, meet: int = 1) -> None:
        self.now = self.most = 0
        self._lock = threading.Lock()
        self._meeting = threading.Barrier(meet) if meet > 1 else None

    def __call__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        if self._meeting is not None:
            self._meeting.wait(timeout=30)
        else:
            threading.Event().wait(0.01)  # room for another to come in, were the slots not holding it back
        with self._lock:
            self.now -= 1


def run_together(slots: DecodeSlots, pixels: int, inside, times: int) -> None:
    def one(_: int) -> None:
        with slots.take(pixels):
            inside()

    with ThreadPoolExecutor(times) as pool:
        list(pool.map(one, range(times)))


def test_decodes_wait_for_a_slot() -> None:
    in_flight = InFlight(meet=3)
    run_together(DecodeSlots(3), 1_000, in_flight, times=9)
    assert in_flight.most == 3


def test_a_large_image_takes_more_slots() -> None:
    slots = DecodeSlots(4, slot_pixels=100)
    assert [slots.slots_for(p) for p in (1, 100, 101, 250, 10_000)] == [1, 1, 2, 3, 4]
    in_flight = InFlight()
    run_together(slots, 10_000, in_flight, times=6)
    assert in_flight.most == 1
    in_flight = InFlight(meet=2)
    run_together(slots, 200, in_flight, times=4)  # two slots each: two at a time
    assert in_flight.most == 2
    assert DecodeSlots(0).count == 1


def test_memory_goes_back_once_the_last_large_image_is_decoded() -> None:
    calls: list[int] = []
    slots = DecodeSlots(4, slot_pixels=100, after_large=lambda: calls.append(1))
    with slots.take(50):
        pass
    assert calls == []
    with slots.take(200):
        with slots.take(200):
            pass
        assert calls == []  # one large image still decoding
    assert calls == [1]
    with pytest.raises(RuntimeError), slots.take(1_000):
        raise RuntimeError("corrupt")
    assert calls == [1, 1]

    def decode_again() -> None:
        with slots.take(1_000):
            pass

    done = threading.Thread(target=decode_again)
    done.start()
    done.join(timeout=30)
    assert not done.is_alive()  # the failed decode gave its slots back


def test_giving_memory_back_is_safe_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(allocator.give_memory_back(), bool)  # True on glibc
    monkeypatch.setattr(allocator, "_malloc_trim", lambda: None)  # as where libc is not glibc
    assert allocator.give_memory_back() is False
