"""Data capture (``kennel serve --capture DIR``): one JSON line per sampled request, for ``kennel monitor``.

The request path pays for one random draw and one ``put_nowait``: JSON, the brightness of a thumbnail, the
photo's header and every file write happen on one writer thread behind a bounded queue. When the queue is full
the record is dropped and counted (each later line says how many were dropped so far): a slow disk never slows
or stalls an answer. A line::

    {"time": "2026-05-01T12:00:00.123+00:00", "model": {...as given...},
     "image": {"width": 500, "height": 375, "mode": "RGB", "format": "JPEG", "bytes": 48213, "brightness": 0.47},
     "predictions": [{"label": "Beagle", "probability": 0.91}, ...], "dog": {"score": 0.98, "is_dog": true},
     "latency_ms": 41.2, "dropped": 0, "photo": "photos/20260501-120000-3f9a0c1b2d4e.jpg"}

``width``, ``height``, ``mode``, ``format`` and ``bytes`` are the photo's as sent (read from its header), not
the decoded copy's, which the endpoint shrinks; ``brightness`` is the mean luma of the decoded photo, 0 to 1 (of
a small copy the writer decodes itself when the model decoded none: a user's handlers; no ``image`` when the
body is no image);
``photo`` is there only with ``photos=True``. Files are ``DIR/capture-YYYYmmdd-HHMMSS-N.jsonl`` (UTC; ``N``
tells apart files begun in the same second, by several server processes too), rotated by size and at each new
hour, written a whole line at a time and flushed, so a reader sees complete lines (:func:`read_capture` skips
one still being written).
"""

from __future__ import annotations

import io
import json
import logging
import queue
import random
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, NamedTuple

from PIL import Image, ImageStat

from kennel.jsonl import read_jsonl

log = logging.getLogger(__name__)

PATTERN = "capture-*.jsonl"
PHOTOS = "photos"  # the folder under DIR where kept photos go
MAX_BYTES = 64 * 2**20  # a capture file is rotated before it grows past this
# Records waiting for the writer. Each holds a decoded photo (at most twice the model's resize side, about 1 MB
# for a 224 px model): the queue caps the memory a stalled disk can cost at a few hundred MB.
MAX_QUEUE = 256
THUMBNAIL_SIDE = 64  # brightness is measured on a copy at most this long: the mean barely moves, the cost does
SUFFIXES = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
_NAME = re.compile(r"^capture-(\d{8}-\d{6})-(\d+)\.jsonl$")


def brightness(image: Image.Image) -> float:
    """Mean luma of ``image`` (ITU-R 601, as Pillow's "L" mode) from 0 (black) to 1 (white). A box filter's
    thumbnail averages every pixel, so measuring on it gives the whole photo's mean at a fraction of the cost."""
    side = max(image.size)
    if side > THUMBNAIL_SIDE:
        scale = THUMBNAIL_SIDE / side
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    return ImageStat.Stat(image.convert("L")).mean[0] / 255.0


def photo_bytes(body: bytes) -> bytes:
    """The photo inside a request body: the body itself, or the base64 image of a JSON body."""
    if body[:1] not in (b"{", b" ", b"\n", b"\t", b"\r"):
        return body
    from kennel.serve.inputs import InputError, parse_json

    try:
        return parse_json(body)[0]
    except InputError:  # the endpoint took the request, so this does not happen; the line goes without a header
        return b""


def header(data: bytes) -> dict[str, Any]:
    """The photo's own size, mode and format, from its header (nothing is decoded); empty when unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return {"width": image.width, "height": image.height, "mode": image.mode, "format": image.format}
    except Exception:  # a line without the header beats no line
        return {}


def thumbnail(data: bytes) -> Image.Image | None:
    """A small decoded copy of the photo in ``data`` (a JPEG decodes at a fraction of its size), or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            return image.copy()
    except Exception:  # no image, or one Pillow cannot read: the line goes without it
        return None


def utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, timezone.utc)


class _Request(NamedTuple):
    """What the request path hands the writer: references only, nothing computed."""

    time: float
    answer: Mapping[str, Any]
    image: Image.Image | None
    body: bytes
    model: Mapping[str, Any]
    latency_ms: float | None
    dropped: int


class Capture:
    """Samples requests on the request path and writes them on a background thread (see the module's docstring).

    ``sample`` is the share of requests kept (1: all); ``photos`` keeps each sampled photo's bytes under
    ``folder/photos/``; ``max_bytes`` rotates a file before it grows past that size, and ``hourly`` at each new
    UTC hour; ``seed`` makes the sampling repeatable. Call :meth:`close` on shutdown to write what is queued."""

    def __init__(
        self,
        folder: Path | str,
        sample: float = 1.0,
        photos: bool = False,
        max_bytes: int = MAX_BYTES,
        seed: int | None = None,
        hourly: bool = True,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        if not 0 < sample <= 1:
            raise ValueError(f"the capture sample must be above 0 and at most 1, got {sample}")
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        if photos:
            (self.folder / PHOTOS).mkdir(exist_ok=True)
        self.sample = sample
        self.photos = photos
        self.max_bytes = max_bytes
        self.hourly = hourly
        self.written = 0  # lines written
        self.failed = 0  # records the writer could not write (a full disk); logged
        self._dropped = 0  # records refused because the queue was full
        self._counting = threading.Lock()
        self._random = random.Random(seed)
        self._queue: queue.Queue[_Request | threading.Event | None] = queue.Queue(max_queue)
        self._file: IO[str] | None = None
        self._file_size = 0
        self._file_hour: tuple[int, int, int, int] | None = None
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="kennel-capture", daemon=True)
        self._writer.start()

    @property
    def dropped(self) -> int:
        """Sampled records dropped because the writer was behind (the queue was full)."""
        return self._dropped

    # --- the request path ---------------------------------------------------------------------------------

    def record(
        self,
        answer: Mapping[str, Any],
        image: Image.Image | None,
        body: bytes,
        model: Mapping[str, Any],
        latency_ms: float | None = None,
    ) -> bool:
        """Queue one answered request, if sampled; returns at once, True when queued. ``answer`` is the endpoint's
        response dict, ``image`` the decoded photo (before preprocessing; None: the writer decodes a small copy of
        the body's), ``body`` the request body (the photo's bytes or a JSON body with it in base64), ``model`` what
        identifies the model served (name, version, backbone, created); ``latency_ms`` defaults to the answer's.
        Neither ``answer`` nor ``image`` may change afterwards: the writer reads them later."""
        if self._closed or self._random.random() >= self.sample:
            return False
        item = _Request(time.time(), answer, image, body, model, latency_ms, self._dropped)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._counting:
                self._dropped += 1
                dropped = self._dropped
            if (dropped & (dropped - 1)) == 0:  # 1, 2, 4, 8, ...: the log says it, without a line per request
                log.warning("capture: %d record(s) dropped so far: the writer is behind (a slow disk?)", dropped)
            return False
        return True

    # --- flushing and closing ------------------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record queued so far is written; False if that takes longer than ``timeout``."""
        if not self._writer.is_alive():
            return self._queue.empty()
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer and close the file; later records are ignored."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("capture: the writer did not drain its queue within %g s; the rest is lost", timeout)
            return
        self._writer.join(timeout)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                try:
                    self._write(self._line(item), utc(item.time))
                except Exception:  # a full disk: count, say it now and then, keep serving
                    self.failed += 1
                    if (self.failed & (self.failed - 1)) == 0:
                        log.warning("capture: %d record(s) could not be written to %s", self.failed, self.folder)
                        log.debug("capture write failed", exc_info=True)
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _line(self, item: _Request) -> str:
        answer, moment = item.answer, utc(item.time)
        data = photo_bytes(item.body)
        picture = item.image if item.image is not None else thumbnail(data)
        image: dict[str, Any] = {}
        if picture is not None:
            image = {
                "width": picture.width,
                "height": picture.height,
                "mode": picture.mode,
                "format": None,
                **header(data),
                "bytes": len(data),
                "brightness": round(brightness(picture), 5),
            }
        dog = answer.get("dog") or {}
        line: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "model": dict(item.model),
            "image": image,
            "predictions": [
                {"label": p["label"], "probability": float(p["probability"])} for p in answer.get("predictions", ())
            ],
            "dog": {"score": float(dog.get("score", 0.0)), "is_dog": bool(dog.get("is_dog", False))}
            | ({"available": False} if dog.get("available") is False else {}),
            "latency_ms": float(item.latency_ms if item.latency_ms is not None else answer.get("latency_ms", 0.0)),
            "dropped": item.dropped,
        }
        if self.photos and data and picture is not None:
            line["photo"] = self._save_photo(data, image.get("format"), moment)
        return json.dumps(line, ensure_ascii=False) + "\n"

    def _save_photo(self, data: bytes, fmt: str | None, moment: datetime) -> str:
        name = f"{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(6)}.{SUFFIXES.get(fmt or '', 'bin')}"
        (self.folder / PHOTOS / name).write_bytes(data)
        return f"{PHOTOS}/{name}"

    def _write(self, line: str, moment: datetime) -> None:
        size = len(line.encode("utf-8"))
        hour = (moment.year, moment.month, moment.day, moment.hour)
        full = self._file_size > 0 and self._file_size + size > self.max_bytes
        if self._file is None or full or (self.hourly and hour != self._file_hour):
            self._open(moment)
            self._file_hour = hour
        assert self._file is not None
        self._file.write(line)  # one write of one whole line; line buffering flushes it at its newline
        self._file.flush()
        self._file_size += size
        self.written += 1

    def _open(self, moment: datetime) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for n in range(10_000):
            path = self.folder / f"capture-{moment:%Y%m%d-%H%M%S}-{n}.jsonl"
            try:  # exclusive: another server process may have begun a file in the same second
                self._file = path.open("x", buffering=1, encoding="utf-8")
            except FileExistsError:
                continue
            self._file_size = 0
            log.info("capture: writing %s", path)
            return
        raise FileExistsError(f"{self.folder}: 10,000 capture files begun in one second")


# --- reading ----------------------------------------------------------------------------------------------------


def _order(path: Path) -> tuple[str, int, str]:
    match = _NAME.match(path.name)
    return (match[1], int(match[2]), path.name) if match else (path.name, 0, path.name)


def capture_files(folder: Path | str) -> list[Path]:
    """The capture files in ``folder``, oldest first."""
    return sorted(Path(folder).expanduser().glob(PATTERN), key=_order)


def read_capture(folder: Path | str) -> list[dict[str, Any]]:
    """Every line of every capture file in ``folder``, oldest first (see :func:`read_capture_files`)."""
    return read_capture_files(capture_files(folder))


def read_capture_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every line of the capture files ``paths``, in their order. A last line without its newline is still
    being written and is skipped, as is any line that is not a JSON object."""
    return [line for path in paths for line in read_jsonl(path, complete_only=True)[0]]
