"""Is there a dog, is there a human face: two answers beside the breed, from the ImageNet head and OpenCV."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch
from PIL import Image

from kennel import serve_defaults as defaults

log = logging.getLogger(__name__)

DOG_CLASSES = slice(151, 269)  # ImageNet classes 151 (Chihuahua) to 268 (Mexican hairless) are dogs
FACE_SIDE = 480  # faces are looked for on a grayscale copy whose longer side is at most this
# Overlapping detections a face needs. OpenCV's usual 5 finds a "face" in 8% of cat, 6% of dog and 40% of other
# photos of the shared sets; 10 finds one in 2% of cats, 2.5% of dogs, none of the others, and still in all 7 human
# photos (tests/test_serve_integration.py).
FACE_NEIGHBOURS = 10
FACE_SCALE_STEP = 1.2  # the window grows 20% per scale: half the scales of OpenCV's usual 1.1


def dog_verdict(imagenet_logits: torch.Tensor | None, threshold: float = defaults.DOG_THRESHOLD) -> dict[str, Any]:
    """The softmax mass of ImageNet's dog classes for one photo; unavailable without an ImageNet head."""
    if imagenet_logits is None:
        return {"is_dog": False, "score": 0.0, "available": False}
    score = float(imagenet_logits.float().softmax(dim=-1)[..., DOG_CLASSES].sum())
    return {"is_dog": score >= threshold, "score": score}


class FaceDetector:
    """OpenCV's frontal-face Haar cascade, loaded on first use in each thread; reports ``available: false``
    without OpenCV. A cascade is not safe to share between threads, and one per thread lets requests look for
    faces in parallel (OpenCV releases the GIL) instead of queueing on a lock."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._local = threading.local()

    def _load(self) -> Any:
        if not hasattr(self._local, "cascade"):
            self._local.cascade = None
            try:
                import cv2

                cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
                self._local.cascade = None if cascade.empty() else cascade
            except (ImportError, AttributeError):  # no OpenCV, or OpenCV 5 (its Haar cascades moved out)
                log.warning("no OpenCV 4 with Haar cascades (opencv-python-headless<5): faces are not looked for")
        return self._local.cascade

    def __call__(self, image: Image.Image) -> dict[str, Any]:
        cascade = self._load() if self.enabled else None
        if cascade is None:
            return {"found": False, "count": 0, "available": False}
        gray = image.convert("L")
        scale = FACE_SIDE / max(gray.size)
        if scale < 1:
            gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))))
        if min(gray.size) < 24:  # smaller than the cascade's window
            return {"found": False, "count": 0}
        faces = cascade.detectMultiScale(
            np.asarray(gray), scaleFactor=FACE_SCALE_STEP, minNeighbors=FACE_NEIGHBOURS, minSize=(24, 24)
        )
        return {"found": len(faces) > 0, "count": len(faces)}
