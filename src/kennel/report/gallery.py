"""The gallery of mistakes: each wrong photo as a thumbnail, and beside it where the model looked for the class it
wrongly gave (Grad-CAM, :mod:`kennel.explain`).

The heatmaps are made once, at the end of the job, on the model it has in memory (:func:`save_heatmaps`), and kept
in its ``evaluation/`` folder, so that writing the page later needs neither PyTorch nor the model. A tuning trial's
job makes none (its page leaves the gallery out); ``kennel report JOB`` makes those a job did not leave, from its
model artifact, a batch of photos at a time, and keeps them too: on ONNX Runtime where the model's shape allows
(:mod:`kennel.cams`, every kennel head), else with PyTorch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.atomic import atomic_write_json
from kennel.jobs.folder import JobDir
from kennel.report import plots
from kennel.report.data import ReportData

if TYPE_CHECKING:
    from PIL import Image

    from kennel.cams import OnnxExplainer
    from kennel.explain import Explainer

log = logging.getLogger(__name__)

THUMBNAIL = 128  # px, the longest side of a card's pictures (the page's CSS shows them at this size)
GALLERY_SIZE = 24  # the most confident mistakes the page shows
HEATMAPS_FILE = "heatmaps.json"  # in the job's evaluation/ folder: each mistake's overlay, base64 PNG


@dataclass
class Gallery:
    cards: list[dict[str, Any]]  # each mistake with ``png`` (the photo) and ``looked`` (the overlay), base64 or None
    looked_note: str | None = None  # why there are no overlays, when there are none


def model_folder(data: ReportData) -> Path | None:
    """The job's model artifact: the folder its record names, else its ``model/`` folder; None without one."""
    from kennel.artifact_files import WEIGHTS_FILE, is_artifact

    named = (data.job or {}).get("artifact")
    for folder in [*([Path(named)] if named else []), data.job_dir / JobDir.MODEL]:
        if is_artifact(folder) and (folder / WEIGHTS_FILE).is_file():
            return folder
    return None


def build_gallery(data: ReportData, mistakes: Sequence[dict[str, Any]], explain: bool = True) -> Gallery:
    """The cards of ``mistakes``; with ``explain``, each photo's overlay: those the job kept, and where
    ``data.gallery`` is ``full``, those made now from the job's model for the others."""
    looked, note = _heatmaps(data, mistakes) if explain and mistakes else ({}, None)
    return Gallery([_card(mistake, looked.get(_key(mistake))) for mistake in mistakes], note)


def _key(mistake: dict[str, Any]) -> str:
    return f"{mistake.get('file')}\t{mistake.get('predicted')}"


def read_heatmaps(job_dir: Path) -> dict[str, str]:
    """The overlays a job kept, by mistake; none where the file is missing or unreadable."""
    try:
        entries = json.loads((JobDir(job_dir).evaluation / HEATMAPS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {_key(e): e["looked"] for e in entries if isinstance(e, dict) and isinstance(e.get("looked"), str)}


def _heatmaps(data: ReportData, mistakes: Sequence[dict[str, Any]]) -> tuple[dict[str, str], str | None]:
    """Each mistake's overlay, by :func:`_key`, and why there are none when there are none."""
    kept = read_heatmaps(data.job_dir)
    missing = [mistake for mistake in mistakes if _key(mistake) not in kept]
    if not missing:
        return kept, None
    if data.gallery != "full":
        return kept, None if kept else f"no heatmaps: kennel report {data.job_dir.name} makes them"
    folder = model_folder(data)
    if folder is None:
        return kept, None if kept else "no heatmaps: the job has no model artifact with PyTorch weights"
    try:
        made = heatmaps(_explainer(folder, data.job), missing)
    except Exception as exc:  # a report renders whatever the model looks like
        log.warning("no heatmaps in the gallery of %s: %s", data.job_dir, exc)
        return kept, None if kept else f"no heatmaps: the model could not be explained ({type(exc).__name__}: {exc})"
    _write(data.job_dir, [*mistakes], {**kept, **made})
    return {**kept, **made}, None


def _explainer(folder: Path, job: dict[str, Any] | None) -> Explainer | OnnxExplainer:
    """The job's model, explained on ONNX Runtime where it can be (no PyTorch in this process), else with
    PyTorch on the CPU (a GPU may still be busy)."""
    from kennel.cams import CamsUnavailable, OnnxExplainer

    try:
        return OnnxExplainer.load(folder, job)
    except CamsUnavailable as why:
        log.info("heatmaps with PyTorch: %s", why)
    from kennel.explain import Explainer

    return Explainer.load(folder, device="cpu")


def heatmaps(explainer: Explainer | OnnxExplainer, mistakes: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The overlay of where the model looked for the class it wrongly gave, by :func:`_key`, for each mistake
    whose photo reads and whose class the model has (not so for an evaluation of another model)."""
    chosen, photos = [], []
    for mistake in mistakes:
        if mistake.get("predicted") not in explainer.class_names:
            continue
        # Decoded as evaluation decodes photos (JPEG draft at the resize size), so the model sees what it saw then.
        photo = _photo(mistake.get("file"), explainer.preprocessing.resize_size)
        if photo is not None:
            chosen.append(mistake)
            photos.append(photo)
    classes = [explainer.class_names.index(mistake["predicted"]) for mistake in chosen]
    pictures = explainer.pictures(photos, classes, max_side=THUMBNAIL)
    return {_key(mistake): plots.image_png(picture) for mistake, picture in zip(chosen, pictures, strict=True)}


def save_heatmaps(job_dir: Path, model, class_names: list[str], preprocessing, mistakes: Sequence[dict]) -> None:
    """At the end of a job, on the model it has in memory (which the explainer then owns: call it once the model
    is saved): the overlays of its gallery, kept for the page. A failure only warns: the page says there are none."""
    try:
        from kennel.explain import Explainer

        device = next(model.parameters()).device
        made = heatmaps(Explainer(model, class_names, preprocessing, device), mistakes[:GALLERY_SIZE])
    except Exception as exc:
        log.warning("no heatmaps for the gallery of %s: %s", Path(job_dir).name, exc, exc_info=True)
        return
    _write(job_dir, mistakes[:GALLERY_SIZE], made)


def _write(job_dir: Path, mistakes: Sequence[dict[str, Any]], looked: dict[str, str]) -> None:
    entries = [
        {"file": m.get("file"), "predicted": m.get("predicted"), "looked": looked[_key(m)]}
        for m in mistakes
        if _key(m) in looked
    ]
    try:
        atomic_write_json(JobDir(job_dir).evaluation / HEATMAPS_FILE, entries)
    except OSError as exc:  # a read-only job folder still gets its page, made again next time
        log.warning("cannot keep the heatmaps of %s: %s", Path(job_dir).name, exc)


def _card(mistake: dict[str, Any], looked: str | None) -> dict[str, Any]:
    """A mistake with its photo's thumbnail (None for a photo gone or unreadable) and its overlay."""
    photo = _photo(mistake.get("file"), THUMBNAIL)
    if photo is None:
        return {**mistake, "png": None, "looked": None}
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
