"""Pure drawing helpers: maps to colours, overlays, tiles. No computation on models here.

Each function checks its input range or normalises explicitly, and returns uint8 arrays or PIL
images ready for ``st.image`` or a PNG download.
"""

from __future__ import annotations

import io

import numpy as np
import plotly.colors
import torch
from PIL import Image
from torch import Tensor

ArrayLike = np.ndarray | Tensor


def to_numpy(x: ArrayLike) -> np.ndarray:
    """Tensor or array -> float64 numpy array (detached, on the CPU)."""
    if isinstance(x, Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def normalize(values: ArrayLike, percentile: float = 100.0, symmetric: bool = False) -> np.ndarray:
    """Scale to [0, 1] (or [-1, 1] if ``symmetric``), clipping at the given percentile of |values|.

    A constant map becomes all zeros instead of dividing by zero.
    """
    array = to_numpy(values)
    if symmetric:
        scale = np.percentile(np.abs(array), percentile) if array.size else 0.0
        return np.clip(array / scale, -1, 1) if scale > 0 else np.zeros_like(array)
    lo = float(array.min()) if array.size else 0.0
    hi = float(np.percentile(array, percentile)) if array.size else 0.0
    return np.clip((array - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(array)


def _anchors(name: str) -> np.ndarray:
    scale = plotly.colors.get_colorscale(name)
    return np.array([[v, *plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(c, "rgb")[0][0])]
                     for v, c in scale], dtype=np.float64)


def colormap(values: ArrayLike, name: str = "Inferno") -> np.ndarray:
    """Map values in [0, 1] (H, W) to RGB uint8 (H, W, 3) with a plotly colour scale.

    Raises:
        ValueError: if values fall outside [0, 1] (normalise first).
    """
    array = to_numpy(values)
    if array.size and (array.min() < -1e-6 or array.max() > 1 + 1e-6):
        raise ValueError("colormap expects values in [0, 1]; call normalize() first.")
    anchors = _anchors(name)
    rgb = np.stack([np.interp(array, anchors[:, 0], anchors[:, k]) for k in (1, 2, 3)], axis=-1)
    return rgb.round().clip(0, 255).astype(np.uint8)


def overlay(image: Image.Image, heat: ArrayLike, alpha: float = 0.5, name: str = "Inferno") -> Image.Image:
    """Blend a [0, 1] heat map (h, w) over an image; the map is resized to the image (bilinear).

    Returns:
        RGB image of the image's size.
    """
    if not 0 <= alpha <= 1:
        raise ValueError("alpha must be in [0, 1].")
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    colored = Image.fromarray(colormap(heat, name)).resize(image.size, Image.Resampling.BILINEAR)
    blended = (1 - alpha) * base + alpha * np.asarray(colored, dtype=np.float64)
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def tile(images: list[np.ndarray], columns: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Arrange equally sized uint8 images (h, w) or (h, w, 3) in a grid with ``pad`` pixels between.

    Returns:
        (rows*(h+pad)-pad, columns*(w+pad)-pad[, 3]) uint8 array.
    """
    if not images:
        raise ValueError("tile() needs at least one image.")
    h, w = images[0].shape[:2]
    channels = images[0].shape[2:]
    rows = -(-len(images) // columns)
    grid = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, *channels), fill, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return grid


def upscale(array: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale of a uint8 image so its longer side is about ``size`` (no smoothing)."""
    factor = max(1, size // max(array.shape[:2]))
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """Encode as PNG, for download buttons."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rank_correlation(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of two maps of equal size (ties broken by position)."""
    ra = torch.from_numpy(to_numpy(a).ravel()).argsort().argsort().double()
    rb = torch.from_numpy(to_numpy(b).ravel()).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 0.0
