"""Pure drawing helpers: maps to colours, overlays, tiles. No computation on models here.

Each function checks its input range or normalises explicitly, and returns uint8 arrays or PIL
images ready for ``st.image`` or a PNG download.
"""

from __future__ import annotations

import functools
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
    hi = (float(array.max()) if percentile >= 100 else float(np.percentile(array, percentile))) if array.size else 0.0
    return np.clip((array - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(array)


@functools.lru_cache(maxsize=64)
def _anchors(name: str) -> np.ndarray:
    """The colour scale's stops as rows (position, R, G, B), read-only. Cached: plotly looks a named scale up
    by listing its modules' members each time, which took most of the Live panel's refresh (hundreds of maps)."""
    scale = plotly.colors.get_colorscale(name)
    anchors = np.array([[v, *plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(c, "rgb")[0][0])]
                        for v, c in scale], dtype=np.float64)
    anchors.flags.writeable = False
    return anchors


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


def map_grid(maps: ArrayLike, columns: int, tile_px: int = 64, shared_scale: bool = False,
             name: str = "Viridis", pad: int = 2) -> np.ndarray:
    """A stack of 2-D maps (K, h, w) as one grid of coloured tiles, nearest-upscaled (no smoothing).

    Args:
        shared_scale: one [min, max] for all maps (weak maps look dark); else each map its own.

    Returns:
        uint8 (H, W, 3) grid.
    """
    array = to_numpy(maps)
    if array.ndim != 3 or len(array) == 0:
        raise ValueError("map_grid expects a non-empty stack of maps (K, h, w).")
    if shared_scale:
        lo, hi = array.min(), array.max()
    else:  # each map from its own minimum to its maximum (``normalize``), all at once
        lo, hi = array.min(axis=(1, 2), keepdims=True), array.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    scaled = np.where(span > 0, np.clip((array - lo) / np.where(span > 0, span, 1), 0, 1), 0.0)
    return tile([upscale(rgb, tile_px) for rgb in colormap(scaled, name)], columns, pad=pad)


def channel_max_abs(attribution: Tensor) -> Tensor:
    """Per-pixel saliency of an (N, C, H, W) attribution: |value|, then max over channels
    (Simonyan et al., 2014). Returns (N, H, W)."""
    if attribution.dim() != 4:
        raise ValueError(f"Expected an (N, C, H, W) attribution, got shape {tuple(attribution.shape)}.")
    return attribution.detach().abs().amax(dim=1)


def heat_overlay(image: Image.Image, heat: ArrayLike, alpha: float = 0.55, signed: bool = False,
                 percentile: float = 99.0, name: str | None = None) -> Image.Image:
    """Normalise a map (h, w) and blend it over ``image``.

    A signed map (occlusion: positive helps the class, negative hurts) is scaled symmetrically
    around 0 and drawn with a diverging scale (RdBu reversed: red helps); otherwise it goes from
    its minimum to its ``percentile`` (clipping a few extreme pixels) on Inferno. ``name``: another
    plotly colour scale (presenter mode's high-contrast one).
    """
    if signed:
        scaled = (normalize(heat, percentile, symmetric=True) + 1) / 2
        return overlay(image, scaled, alpha, name or "RdBu_r")
    return overlay(image, normalize(heat, percentile), alpha, name or "Inferno")


def pixels_to_array(pixels: ArrayLike) -> np.ndarray:
    """First image of a pixel batch (N, C, H, W) or one image (C, H, W), values in [0, 1] (clipped),
    -> uint8 (H, W) for one channel or (H, W, 3) for three."""
    array = to_numpy(pixels)
    if array.ndim == 4:
        array = array[0]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"pixels_to_array expects (N, C, H, W) or (C, H, W) with 1 or 3 channels, not {array.shape}.")
    array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    return array[..., 0] if array.shape[2] == 1 else array


def signed_image(values: ArrayLike, percentile: float = 99.5) -> Image.Image:
    """A signed map (C, H, W) or (H, W), e.g. a guided-backprop gradient, as an image centred on
    gray: 0 -> 0.5 (mid gray), scaled symmetrically by the ``percentile`` of |values| (clipped), as
    Springenberg et al. (2015) show their gradients. All channels share one scale.

    Returns:
        "L" image for one channel, "RGB" for three, of size (W, H).
    """
    array = to_numpy(values)
    if array.ndim == 3:
        if array.shape[0] not in (1, 3):
            raise ValueError(f"signed_image expects (H, W) or (C, H, W) with 1 or 3 channels, not {array.shape}.")
        array = array.transpose(1, 2, 0)
        array = array[..., 0] if array.shape[2] == 1 else array
    elif array.ndim != 2:
        raise ValueError(f"signed_image expects (H, W) or (C, H, W), not {array.shape}.")
    scaled = normalize(array, percentile, symmetric=True) * 0.5 + 0.5
    return Image.fromarray((scaled * 255).round().clip(0, 255).astype(np.uint8))


# Okabe & Ito (2008), *Color Universal Design*: distinguishable with every common colour-vision deficiency.
# Black first and yellow last, so the palest colour is used only when there are eight classes or more.
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
CLASS_SYMBOLS = ("circle", "diamond", "square", "x", "triangle-up")


def class_style(index: int) -> tuple[str, str]:
    """Colour and marker symbol of class ``index``: Okabe–Ito colours, then a new symbol per round of eight."""
    return OKABE_ITO[index % len(OKABE_ITO)], CLASS_SYMBOLS[(index // len(OKABE_ITO)) % len(CLASS_SYMBOLS)]


def framed_thumbnail(image: Image.Image, color: str, size: int = 32, border: int = 3) -> Image.Image:
    """``image`` resized to ``size``×``size`` inside a ``border``-pixel frame of ``color`` (its class)."""
    inner = size - 2 * border
    canvas = Image.new("RGB", (size, size), color)
    canvas.paste(image.convert("RGB").resize((inner, inner)), (border, border))
    return canvas


def data_uri(image: Image.Image) -> str:
    """``image`` as a PNG ``data:`` URI (a plotly layout image's source)."""
    import base64

    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
