"""``kennel predict --model M --explain PHOTO``: the photo's top classes, and a PNG of where the model looked for the
first (Grad-CAM over the photo, see :mod:`kennel.explain`)."""

from __future__ import annotations

from pathlib import Path

from kennel.errors import PathError


def explained_path(photo: Path, out: Path | None) -> Path:
    """Where the overlay goes: ``out`` as given, ``NAME-explained.png`` inside ``out`` when it is a folder, or in
    the current folder without one (beside the photo could be a dataset's folder, read-only or not yours)."""
    name = f"{photo.stem}-explained.png"
    if out is None:
        return Path.cwd() / name
    return out / name if out.is_dir() else out


def explain_command_output(
    model_folder: Path, photo_path: Path, out_path: Path | None, top_k: int, device: str = "auto"
) -> Path:
    """Print the photo's ``top_k`` classes, write the overlay PNG of where the model looked for the first, print its
    path and return it."""
    from kennel.cli.output import console, print_prediction
    from kennel.data.images import open_rgb
    from kennel.explain import Explainer
    from kennel.overlays import png_bytes

    photo = open_rgb(photo_path)  # raises ImageError (exit 1) naming the file
    explainer = Explainer.load(model_folder, device)
    target = explained_path(photo_path, out_path)
    explanation, picture = explainer.picture(photo)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png_bytes(picture))
    except OSError as exc:
        raise PathError.of(exc, "cannot write the explanation", target) from None
    shown = console()
    print_prediction(shown, photo_path, [{"label": n, "probability": p} for n, p in explanation.ranking[:top_k]])
    shown.print(f"where it looked for {explanation.label}: {target}", highlight=False, soft_wrap=True)
    return target
