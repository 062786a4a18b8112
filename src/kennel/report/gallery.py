"""The gallery of mistakes: each wrong photo as a thumbnail, and beside it where the model looked for the class it
wrongly gave (Grad-CAM, :mod:`kennel.explain`), made at report time from the job's model artifact when it has its
PyTorch weights. A few dozen photos at most: a second or two on a CPU for the backbones kennel trains."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.jobs.folder import JobDir
from kennel.report import plots
from kennel.report.data import ReportData

if TYPE_CHECKING:
    from PIL import Image

    from kennel.explain import Explainer

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
    explainer, note = _explainer(data) if explain and mistakes else (None, None)
    return Gallery([_card(mistake, explainer) for mistake in mistakes], note)


def _explainer(data: ReportData) -> tuple[Explainer | None, str | None]:
    """The job's model ready to explain, or None and why there are no overlays."""
    folder = model_folder(data)
    if folder is None:
        return None, "no heatmaps: the job has no model artifact with PyTorch weights"
    try:
        from kennel.explain import Explainer

        return Explainer.load(folder, device="cpu"), None  # a handful of photos; a GPU may still be busy
    except Exception as exc:  # a report renders whatever the model looks like
        log.warning("no heatmaps in the gallery of %s: %s", data.job_dir, exc)
        return None, f"no heatmaps: the model could not be explained ({type(exc).__name__}: {exc})"


def _card(mistake: dict[str, Any], explainer: Explainer | None) -> dict[str, Any]:
    """A mistake with its photo's thumbnail and overlay (None for a photo gone or unreadable), both made from one
    decode of the photo. No overlay for a class the model does not have (an evaluation of another model)."""
    explained = explainer is not None and mistake.get("predicted") in explainer.class_names
    # Where the model looks at it, the photo is decoded as evaluation decodes photos (JPEG draft at the resize
    # size), so the model sees what it saw then.
    photo = _photo(mistake.get("file"), explainer.preprocessing.resize_size if explained else THUMBNAIL)
    if photo is None:
        return {**mistake, "png": None, "looked": None}
    looked = _looked_png(explainer, photo, mistake["predicted"]) if explained else None
    return {**mistake, "png": plots.thumbnail_png(photo, THUMBNAIL), "looked": looked}


def _photo(file: str | None, draft_size: int) -> Image.Image | None:
    """The photo of a mistake, decoded; None without a file, or for one gone or unreadable (the gallery shows a
    placeholder)."""
    from kennel.data.images import ImageError, open_rgb

    if not file:
        return None
    try:
        return open_rgb(file, draft_size=draft_size)
    except (ImageError, OSError):
        return None


def _looked_png(explainer: Explainer, photo: Image.Image, predicted: str) -> str:
    """The overlay of where the model looked in ``photo`` for the class it wrongly gave, base64."""
    _, picture = explainer.picture(photo, explainer.class_names.index(predicted), max_side=THUMBNAIL)
    return plots.image_png(picture)
