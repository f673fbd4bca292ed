"""Loading any image a user may bring, safely, as an RGB PIL image.

``load_image`` is the only way images enter cnnviz. It applies EXIF orientation, composites
transparency on white, converts grayscale / 16-bit / palette / CMYK to RGB, takes the first
frame of an animation, and shrinks anything whose longer side exceeds ``MAX_SIDE``. Every
failure is an ``ImageError`` with a message a student can act on.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 1024
"""Longer side, in pixels, that loaded images are shrunk to (aspect ratio kept)."""

MAX_PIXELS = 40_000_000
"""Images with more pixels than this are refused before they are decoded (decompression bombs)."""

MAX_BYTES = 50 * 1024 * 1024
"""Files larger than this are refused."""

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]


class ImageError(ValueError):
    """An image could not be read; the message says why and what to do."""


def _read_bytes(source: ImageSource) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"No image file at {path}.")
        if path.stat().st_size > MAX_BYTES:
            raise ImageError(f"{path.name} is larger than {MAX_BYTES // 2**20} MB; please use a smaller image.")
        data = path.read_bytes()
    elif hasattr(source, "read"):
        data = source.read(MAX_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError("The file object must be opened in binary mode ('rb').")
    else:
        raise ImageError(f"Cannot read an image from a {type(source).__name__}; give a path, bytes or a file object.")
    if len(data) == 0:
        raise ImageError("The file is empty. Please choose an image file (PNG, JPEG, WebP, BMP, GIF or TIFF).")
    if len(data) > MAX_BYTES:
        raise ImageError(f"The file is larger than {MAX_BYTES // 2**20} MB; please use a smaller image.")
    return data


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit and float images to 8-bit grayscale by their value range."""
    array = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and array.max(initial=0) > 255):
        array = array / 65535.0 * 255.0
    elif image.mode == "F":
        lo, hi = float(array.min(initial=0)), float(array.max(initial=0))
        array = (array - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(array)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit(image)
    return image.convert("RGB")


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def load_image(source: ImageSource, max_side: int = MAX_SIDE) -> Image.Image:
    """Read an image from a path, bytes or binary file object.

    Args:
        source: path, bytes, or a binary file object (e.g. a Streamlit upload).
        max_side: images whose longer side exceeds this are shrunk to it.

    Returns:
        An RGB ``PIL.Image`` with EXIF orientation applied, longer side <= ``max_side``.

    Raises:
        ImageError: for empty, truncated, non-image, oversized or bomb-like input.
    """
    data = _read_bytes(source)
    try:
        # PIL warns (DecompressionBombWarning) above its own limit and raises above twice that; our
        # smaller limit below refuses both, so no process-wide warnings filter is needed.
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(
                f"The image is {width}×{height} pixels, more than the {MAX_PIXELS // 1_000_000} million "
                "cnnviz accepts. Please resize it first."
            )
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            "This file is not an image cnnviz can read. Please choose a PNG, JPEG, WebP, BMP, GIF or TIFF file."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("The image is too large to open safely (it may be a decompression bomb).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(
            f"The image file is damaged or truncated ({error}). Please export it again or choose another."
        ) from None
    except Exception as error:  # any decoder bug must still end in a clear message
        raise ImageError(f"The image could not be decoded ({type(error).__name__}: {error}).") from None
    return _shrink(rgb, max_side)
