"""Decoding any image file a user may have into an RGB PIL image, and the errors data loading raises."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

# The extensions torchvision's ImageFolder accepts (case-insensitive), so the same files count as images.
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A problem with the data set itself (layout, empty class, unknown label): found before training starts."""


class BadImageError(DataError):
    """One file that cannot be decoded as an image; the message names the file."""


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float grayscale to 8-bit 'L', scaling instead of clipping."""
    a = np.asarray(img)
    if img.mode == "F":
        a = a.astype(np.float64)
        hi = float(a.max()) if a.size else 0.0
        # Float images are [0, 1] by convention; anything larger is taken as already 0..255.
        a = a * 255.0 if hi <= 1.0 else a
    else:
        a = a.astype(np.int64)
        hi = int(a.max()) if a.size else 0
        # 'I;16*' is 16-bit by definition; 'I' (32-bit) holds 16-bit PNGs and TIFFs in practice.
        a = a / 257.0 if (img.mode.startswith("I;16") or hi > 255) else a
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: grayscale, palette, CMYK, RGBA/LA (alpha dropped, as torchvision's loader does),
    1-bit, 16-bit and float."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    elif img.mode == "P":
        # Through RGBA so palette transparency is read without Pillow's warning; alpha then dropped.
        img = img.convert("RGBA")
    return img.convert("RGB")


def decode_image(source: str | os.PathLike | bytes | bytearray | io.IOBase) -> Image.Image:
    """Open, fully decode and return an RGB image; EXIF orientation applied.

    Raises BadImageError (naming the file) for a missing, truncated, corrupt or non-image file.
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray, io.IOBase)) else os.fspath(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette warnings on odd but readable files
            with Image.open(fp) as im:
                im.load()  # decode now: a truncated file fails here, not later inside a transform
                out = ImageOps.exif_transpose(im) or im
                out = to_rgb(out)
                if out is im:
                    out = im.copy()
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, struct.error, ... on bad files
        raise BadImageError(f"cannot read image {name}: {type(exc).__name__}: {exc}") from exc
    return out
