"""The endpoint's data capture: lines written off the request path and read back whole, sampling, kept photos,
rotation, and a full queue that drops records instead of blocking."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import encode
from PIL import Image

from kennel.serve import capture as capture_module
from kennel.serve.capture import Capture, capture_files, read_capture

MODEL = {"name": "dogs", "version": "3", "backbone": "tiny", "created": "2026-05-01T12:00:00.000+00:00"}


def answer(label: str = "Beagle", probability: float = 0.75, score: float = 0.97) -> dict:
    """The endpoint's response, in the shape Endpoint.respond makes it."""
    return {
        "predictions": [
            {"label": label, "probability": probability, "index": 1},
            {"label": "Pug", "probability": 1 - probability, "index": 0},
        ],
        "dog": {"is_dog": score >= 0.5, "score": score},
        "human_face": {"found": False, "count": 0, "searched": False},
        "model": {"backbone": "tiny", "classes": 2},
        "latency_ms": 12.5,
    }


def grey_photo(width: int = 120, height: int = 80, level: int = 128) -> tuple[bytes, Image.Image]:
    """A grayscale JPEG as sent, and the RGB copy the endpoint decodes (half size, as a shrink would give)."""
    sent = Image.new("L", (width, height), level)
    return encode(sent), sent.convert("RGB").resize((width // 2, height // 2))


def test_a_line_holds_every_field_and_reads_back(tmp_path: Path) -> None:
    body, decoded = grey_photo()
    with Capture(tmp_path, seed=0) as capture:
        assert capture.record(answer(), decoded, body, MODEL, latency_ms=40.0)
    (line,) = read_capture(tmp_path)
    moment = datetime.fromisoformat(line["time"])
    assert moment.utcoffset().total_seconds() == 0 and abs((datetime.now(timezone.utc) - moment).total_seconds()) < 60
    assert line["model"] == MODEL
    # The photo as sent (its header), not the decoded copy: 120 x 80 grayscale JPEG.
    assert {k: line["image"][k] for k in ("width", "height", "mode", "format", "bytes")} == {
        "width": 120,
        "height": 80,
        "mode": "L",
        "format": "JPEG",
        "bytes": len(body),
    }
    assert line["image"]["brightness"] == pytest.approx(128 / 255, abs=0.01)
    assert line["predictions"] == [{"label": "Beagle", "probability": 0.75}, {"label": "Pug", "probability": 0.25}]
    assert line["dog"] == {"score": 0.97, "is_dog": True}
    assert line["latency_ms"] == 40.0
    assert line["dropped"] == 0
    assert "photo" not in line
    assert not (tmp_path / "photos").exists()
    (file,) = capture_files(tmp_path)
    assert file.name.startswith(f"capture-{moment:%Y%m%d-%H}") and file.name.endswith("-0.jsonl")


def test_a_json_body_gives_the_photo_inside_it_and_the_latency_comes_from_the_answer(tmp_path: Path) -> None:
    photo = encode(Image.new("RGB", (64, 48), (250, 250, 250)), "PNG")
    body = json.dumps({"image": base64.b64encode(photo).decode(), "top_k": 2}).encode()
    unavailable = {**answer(), "dog": {"is_dog": False, "score": 0.0, "available": False}}
    with Capture(tmp_path, photos=True) as capture:
        capture.record(unavailable, Image.open(io.BytesIO(photo)).convert("RGB"), body, MODEL)
    (line,) = read_capture(tmp_path)
    assert line["image"]["format"] == "PNG" and line["image"]["bytes"] == len(photo)
    assert line["image"]["brightness"] > 0.95
    assert line["latency_ms"] == 12.5
    assert line["dog"] == {"score": 0.0, "is_dog": False, "available": False}
    assert line["photo"].endswith(".png")
    assert (tmp_path / line["photo"]).read_bytes() == photo  # the photo's bytes, not the JSON body


def test_photos_are_kept_only_when_asked(tmp_path: Path) -> None:
    body, decoded = grey_photo()
    with Capture(tmp_path / "kept", photos=True) as capture:
        capture.record(answer(), decoded, body, MODEL)
    (line,) = read_capture(tmp_path / "kept")
    assert line["photo"].startswith("photos/") and line["photo"].endswith(".jpg")
    assert (tmp_path / "kept" / line["photo"]).read_bytes() == body
    with Capture(tmp_path / "not") as capture:
        capture.record(answer(), decoded, body, MODEL)
    (line,) = read_capture(tmp_path / "not")
    assert "photo" not in line and not (tmp_path / "not" / "photos").exists()


def test_the_sample_keeps_about_its_share_of_requests_and_a_seed_repeats_it(tmp_path: Path) -> None:
    body, decoded = grey_photo(16, 16)
    kept = []
    for run in ("a", "b"):
        with Capture(tmp_path / run, sample=0.1, seed=7, max_queue=5000) as capture:
            queued = sum(capture.record(answer(), decoded, body, MODEL) for _ in range(3000))
        kept.append(len(read_capture(tmp_path / run)))
        assert kept[-1] == queued
    assert 240 <= kept[0] <= 360  # 300 expected; a binomial's sd is 16
    assert kept[0] == kept[1]
    with pytest.raises(ValueError, match="sample"):
        Capture(tmp_path / "c", sample=0)


def test_files_rotate_by_size_and_by_hour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body, decoded = grey_photo(16, 16)
    with Capture(tmp_path / "size", max_bytes=1200) as capture:
        for i in range(12):
            capture.record(answer(probability=i / 20), decoded, body, MODEL)
    files = capture_files(tmp_path / "size")
    assert len(files) >= 3
    assert all(f.stat().st_size <= 1200 for f in files)
    assert [line["predictions"][0]["probability"] for line in read_capture(tmp_path / "size")] == [
        i / 20 for i in range(12)
    ]  # in order across files

    # Two records an hour apart (the clock the capture reads is the test's) go to two files.
    start = datetime(2026, 5, 1, 12, 59, 30, tzinfo=timezone.utc).timestamp()
    clock = iter([start, start + 60])
    monkeypatch.setattr(capture_module, "time", SimpleNamespace(time=lambda: next(clock)))
    with Capture(tmp_path / "hour") as capture:
        capture.record(answer(), decoded, body, MODEL)
        capture.record(answer(), decoded, body, MODEL)
    names = [f.name for f in capture_files(tmp_path / "hour")]
    assert names == ["capture-20260501-125930-0.jsonl", "capture-20260501-130030-0.jsonl"]


def test_a_full_queue_drops_records_instead_of_blocking_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    measuring = threading.Event()

    def stuck(image):  # the writer's first step, made to hang like a stalled disk
        measuring.set()
        release.wait(30)
        return 0.5

    monkeypatch.setattr(capture_module, "brightness", stuck)
    body, decoded = grey_photo(16, 16)
    capture = Capture(tmp_path, max_queue=2)
    try:
        assert capture.record(answer(), decoded, body, MODEL)
        assert measuring.wait(10)  # the writer holds the first record
        started = time.perf_counter()
        queued = [capture.record(answer(), decoded, body, MODEL) for _ in range(10)]
        elapsed = time.perf_counter() - started
        assert queued == [True, True] + [False] * 8
        assert capture.dropped == 8
        assert elapsed < 1.0  # ten calls while the writer is stuck: none waited for it
    finally:
        release.set()
        capture.close()
    lines = read_capture(tmp_path)
    assert len(lines) == 3
    assert [line["dropped"] for line in lines] == [0, 0, 0]  # queued before any drop
    capture = Capture(tmp_path / "later", max_queue=1)
    capture._dropped = 8  # a capture that dropped records says so on the lines that follow
    capture.record(answer(), decoded, body, MODEL)
    capture.close()
    assert read_capture(tmp_path / "later")[0]["dropped"] == 8


def test_a_partial_last_line_and_a_broken_line_are_skipped(tmp_path: Path) -> None:
    good = json.dumps({"time": "2026-05-01T12:00:00.000+00:00", "predictions": []})
    (tmp_path / "capture-20260501-120000-0.jsonl").write_text(f"{good}\nnot json\n{good}\n")
    (tmp_path / "capture-20260501-130000-0.jsonl").write_text(f'{good}\n{{"time": "2026-05-01T13:0')
    (tmp_path / "notes.jsonl").write_text(f"{good}\n")  # not a capture file
    assert len(read_capture(tmp_path)) == 3


def test_files_are_read_oldest_first_and_numbered_files_in_number_order(tmp_path: Path) -> None:
    for name, n in (("capture-20260501-120000-10.jsonl", 3), ("capture-20260501-120000-2.jsonl", 2)):
        (tmp_path / name).write_text(json.dumps({"n": n}) + "\n")
    (tmp_path / "capture-20260501-115959-0.jsonl").write_text(json.dumps({"n": 1}) + "\n")
    assert [line["n"] for line in read_capture(tmp_path)] == [1, 2, 3]


def test_close_writes_what_is_queued_and_later_records_are_ignored(tmp_path: Path) -> None:
    body, decoded = grey_photo(16, 16)
    capture = Capture(tmp_path)
    for _ in range(20):
        capture.record(answer(), decoded, body, MODEL)
    capture.close()
    assert len(read_capture(tmp_path)) == 20
    assert not capture.record(answer(), decoded, body, MODEL)
    capture.close()  # twice is fine
    assert len(read_capture(tmp_path)) == 20


def test_a_write_that_fails_is_counted_and_the_writer_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = iter([OSError(28, "No space left on device"), None])
    real = Capture._write

    def flaky(self, line, moment):
        error = next(calls, None)
        if error is not None:
            raise error
        return real(self, line, moment)

    monkeypatch.setattr(Capture, "_write", flaky)
    body, decoded = grey_photo(16, 16)
    with Capture(tmp_path) as capture:
        capture.record(answer(), decoded, body, MODEL)
        capture.record(answer(), decoded, body, MODEL)
        assert capture.flush()
        assert (capture.failed, capture.written) == (1, 1)
    assert len(read_capture(tmp_path)) == 1


def test_the_endpoint_captures_what_it_answers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from helpers import LOOPBACK, encode, tiny_artifact

    from kennel.serve.app import ServeSettings, create_app

    folder = tiny_artifact(tmp_path / "model", ["Akita", "Beagle", "Pug"])
    settings = ServeSettings(capture_dir=tmp_path / "capture", capture_photos=True)
    photos = [encode(Image.new("RGB", (60 + i, 40), (10 * i, 90, 200))) for i in range(5)]
    with TestClient(create_app(folder, settings), base_url=LOOPBACK) as client:
        answers = [
            client.post("/invocations", content=p, headers={"content-type": "image/jpeg"}).json() for p in photos
        ]
    lines = read_capture(tmp_path / "capture")  # the app closed the capture at shutdown: every line is there
    assert len(lines) == 5
    for line, answer in zip(sorted(lines, key=lambda x: x["image"]["width"]), answers, strict=True):
        assert line["predictions"][0]["label"] == answer["predictions"][0]["label"]
        assert line["model"]["backbone"] == "tiny" and line["model"]["name"] == tmp_path.name  # a job's folder
        assert (tmp_path / "capture" / line["photo"]).is_file()  # named from the capture folder
