"""The gallery of mistakes: each wrong photo as a thumbnail, and beside it where the model looked for the class it
wrongly gave (Grad-CAM, :mod:`kennel.explain`), made at report time from the job's model artifact when it has its
PyTorch weights. A few dozen photos at most: a second or two on a CPU for the backbones kennel trains."""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kennel.jobs.folder import JobDir
from kennel.report import plots
from kennel.report.data import ReportData

log = logging.getLogger(__name__)

THUMBNAIL = 128  # px, the longest side of a card's pictures (the page's CSS shows them at this size)


@dataclass
class Gallery:
    cards: list[dict[str, Any]]  # each mistake with ``png`` (the photo) and ``looked`` (the overlay), base64 or None
    looked_note: str | None = None  # why there are no overlays, when there are none


def model_folder(data: ReportData) -> Path | None:
    """The job's model artifact: the folder its record names, else its ``model/`` folder; None without one."""
    from kennel.artifact import WEIGHTS_FILE, is_artifact

    named = (data.job or {}).get("artifact")
    for folder in [*([Path(named)] if named else []), data.job_dir / JobDir.MODEL]:
        if is_artifact(folder) and (folder / WEIGHTS_FILE).is_file():
            return folder
    return None


def build_gallery(data: ReportData, mistakes: Sequence[dict[str, Any]], explain: bool = True) -> Gallery:
    """The cards of ``mistakes``; with ``explain``, each photo's overlay where the job's model can be explained."""
    cards = [{**m, "png": plots.thumbnail_png(m["file"], THUMBNAIL) if m.get("file") else None} for m in mistakes]
    for card in cards:
        card["looked"] = None
    if not explain or not cards:
        return Gallery(cards)
    folder = model_folder(data)
    if folder is None:
        return Gallery(cards, "no heatmaps: the job has no model artifact with PyTorch weights")
    try:
        from kennel.explain import Explainer

        explainer = Explainer.load(folder, device="cpu")  # a handful of photos; a GPU may still be busy
    except Exception as exc:  # a report renders whatever the model looks like
        log.warning("no heatmaps in the gallery of %s: %s", data.job_dir, exc)
        return Gallery(cards, f"no heatmaps: the model could not be explained ({type(exc).__name__}: {exc})")
    for card in cards:
        card["looked"] = _looked_png(explainer, card)
    return Gallery(cards)


def _looked_png(explainer, card: dict[str, Any]) -> str | None:
    """The overlay of where the model looked for the predicted class, base64; None for a photo gone or unreadable,
    or a class the model does not have (an evaluation of another model)."""
    from kennel.data.images import ImageError, open_rgb
    from kennel.explain import png_bytes

    file, predicted = card.get("file"), card.get("predicted")
    if not file or predicted not in explainer.class_names:
        return None
    try:
        # Decoded as evaluation decodes photos (JPEG draft at the resize size), so the model sees what it saw then.
        image = open_rgb(file, draft_size=explainer.preprocessing.resize_size)
    except (ImageError, OSError):
        return None
    _, picture = explainer.picture(image, explainer.class_names.index(predicted), max_side=THUMBNAIL)
    return base64.b64encode(png_bytes(picture)).decode("ascii")
