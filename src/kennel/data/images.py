"""Opening photos as RGB, fast and safely: JPEG draft decoding, a pixel limit, every mode converted."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageFile

from kennel.errors import KennelError

# Decompression-bomb guard: refuse images beyond this many pixels (a 12,000 x 8,000 photo fits).
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(KennelError, ValueError):
    """A file that cannot be used as an image; the message names the file and the problem."""

    exit_code = 1


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (grayscale, CMYK, palette, alpha, 16-bit) to RGB; transparency composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits rather than clip.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def open_rgb(path: Path | str, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` to an RGB image. ``draft_size`` lets JPEG decode at a reduced scale (much faster for
    large photos) while keeping the short side at least that many pixels."""
    try:
        with Image.open(path) as image:
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            return to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large (over {MAX_PIXELS:,} pixels)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL names the file in some messages ("cannot identify image file '/x.jpg'"): the line names it first.
        reason = str(exc).replace(f" {str(path)!r}", "")
        raise ImageError(f"{path}: cannot decode image ({reason})") from exc


def allow_truncated(enabled: bool) -> None:
    """Training may accept slightly truncated JPEGs (PIL fills the rest grey); checks do not."""
    ImageFile.LOAD_TRUNCATED_IMAGES = enabled
