"""Decoding one image file into a square RGB ``uint8`` array at a training resolution.

Images are turned upright first: an EXIF orientation tag (phones and cameras store photos as
the sensor saw them and record the rotation) is applied, so a photo tagged as rotated trains
the way it is shown. Every PIL mode becomes 8-bit RGB: grayscale (``L``, ``1``), 16/32-bit (``I;16``, ``I``, ``F``),
palette (``P``, with or without transparency), ``LA``/``RGBA`` (composited on white),
``CMYK`` and ``YCbCr``/``LAB``. Non-square images are centre-cropped to their shorter side, then
resized with Lanczos (which averages over the whole footprint when shrinking, like an area filter).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps


class UnreadableImage(Exception):
    """The bytes are not an image PIL can decode (or decoding failed part way)."""


def open_image(data: bytes) -> Image.Image:
    """Decode ``data`` fully and apply its EXIF orientation; ``UnreadableImage`` on any failure
    (truncated, not an image...)."""
    try:
        # A decompression bomb is a bad file, not a reason to stop training: PIL's warning
        # becomes an error, counted as unreadable.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise UnreadableImage(f"{type(e).__name__}: {e}") from None
    try:
        ImageOps.exif_transpose(img, in_place=True)  # orientation 1 or none: unchanged
    except Exception:  # EXIF data PIL cannot parse: the pixels are fine, keep them as stored
        pass
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit ``RGB``; transparency is composited over white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth grayscale: scale the full range of the format down to 8 bits.
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        if img.mode == "F":
            top = 1.0 if a.max() <= 1.0 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX


def center_crop(img: Image.Image) -> Image.Image:
    """Crop the largest centred square."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img if w == h else img.crop((left, top, left + s, top + s))


def to_square_array(img: Image.Image, size: int) -> np.ndarray:
    """RGB, centre-cropped, Lanczos-resized: ``uint8`` ``[size, size, 3]``."""
    img = center_crop(to_rgb(img))
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def halve(a: np.ndarray) -> np.ndarray:
    """2x2 area average of ``uint8`` ``[..., H, W, 3]`` -> ``[..., H/2, W/2, 3]``, rounded."""
    h, w = a.shape[-3], a.shape[-2]
    s = a.reshape(*a.shape[:-3], h // 2, 2, w // 2, 2, 3).astype(np.uint16).sum(axis=(-4, -2))
    return ((s + 2) // 4).astype(np.uint8)
