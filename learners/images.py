"""The one way an image file is read, for display and for the model: PIL and numpy only (no torch), so the
importer (storage), the Label page (app) and the embedding (learners) share it without breaking the layers.

`read_image` applies the EXIF orientation (`ImageOps.exif_transpose`: a portrait phone photo stands upright) and
converts every mode to 8-bit: 16-bit grayscale (`I;16`, `I;16B`, `I;16L`, ...) is scaled by 65535 (its full
range, never clipped to white), 32-bit integer (`I`) and float (`F`) images by their own finite min/max;
palette, alpha (composited over white), CMYK, YCbCr and the rest through PIL's conversion. A mode that cannot be
converted raises `ImageConversionError` (the importer refuses such a file, naming it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from learners.errors import LearnerError

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


class ImageConversionError(LearnerError, ValueError):
    """The image decodes but its mode cannot be turned into 8-bit RGB."""


def read_image(path: str | Path, *, gray: bool = False) -> Image.Image:
    """The image at `path`, upright, as 8-bit RGB; with `gray`, single-channel images come back as 8-bit L
    (for display). PIL's own errors (missing file, not an image, truncated data) propagate."""
    with Image.open(path) as opened:
        opened.load()
        image = _upright(opened)
        return to_8bit(image, gray=gray)


def _upright(image: Image.Image) -> Image.Image:
    """The image turned by its EXIF orientation; a damaged EXIF block leaves it as it is."""
    try:
        turned = ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF data: show and embed the pixels as stored rather than fail
        return image.copy()
    return turned if turned is not None else image.copy()


def to_8bit(image: Image.Image, *, gray: bool = False) -> Image.Image:
    """`image` as 8-bit RGB (or L with `gray` for single-channel modes), scaled as the module docstring says."""
    mode = image.mode
    try:
        if mode.startswith("I;16") or mode in ("I", "F"):
            out = Image.fromarray(_scaled(image), mode="L")
        elif mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in image.info):
            out = _over_white(image)
        elif mode == "1":
            out = image.convert("L")
        else:
            out = image.convert("L" if mode == "L" else "RGB")
    except (ValueError, OSError, TypeError, KeyError) as error:
        raise ImageConversionError(f"cannot convert image mode {mode!r} to 8-bit RGB ({error})") from error
    if gray and out.mode == "L":
        return out
    if not gray and out.mode == "L":
        return out.convert("RGB")
    if gray and out.mode == "RGB" and mode in GRAY_MODES:
        return out.convert("L")
    return out


def _scaled(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit integer or float single-channel image as uint8: 16-bit by 65535, the others by their
    finite min/max (a constant image is black; NaN and infinities are black)."""
    if image.mode.startswith("I;16"):
        values = np.asarray(image).astype(np.float64)
        if image.mode.endswith("S"):  # signed 16-bit
            values = values + 32768.0
        return np.clip(np.round(values / 65535.0 * 255.0), 0, 255).astype(np.uint8)
    values = np.asarray(image).astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    out = np.where(finite, (values - low) / (high - low) * 255.0, 0.0)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _over_white(image: Image.Image) -> Image.Image:
    """An image with alpha composited over white, as RGB (L for grayscale with alpha)."""
    gray = image.mode in ("LA", "La")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    out = Image.alpha_composite(background, rgba).convert("RGB")
    return out.convert("L") if gray else out
