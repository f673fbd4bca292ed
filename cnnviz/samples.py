"""Sample images that need no download: real photos shipped by scikit-image and scikit-learn,
and held-out handwritten digits from scikit-learn (the bundled small CNN's own data)."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

from .images import load_image

PHOTOS = {
    "cat (scikit-image)": ("skimage", "chelsea"),
    "astronaut (scikit-image)": ("skimage", "astronaut"),
    "coffee (scikit-image)": ("skimage", "coffee"),
    "rocket (scikit-image)": ("skimage", "rocket"),
    "cameraman (scikit-image)": ("skimage", "camera"),
    "Hubble deep field (scikit-image)": ("skimage", "hubble_deep_field"),
    "china (scikit-learn)": ("sklearn", "china.jpg"),
    "flower (scikit-learn)": ("sklearn", "flower.jpg"),
}
DEFAULT_PHOTO = "cat (scikit-image)"


def digit_sample_names() -> list[str]:
    """One held-out digit per class: "digit 0" ... "digit 9"."""
    return [f"digit {d}" for d in range(10)]


DEFAULT_DIGIT = "digit 3"


def sample_names() -> list[str]:
    """All gallery entries: digits first, then photos."""
    return [*digit_sample_names(), *PHOTOS]


@lru_cache(maxsize=None)
def _held_out_digit_index(digit: int) -> int:
    from .small_cnn import digits_split, load_digits_images

    _, labels = load_digits_images()
    _, test_idx = digits_split()
    return int(next(i for i in sorted(test_idx) if labels[i] == digit))


def _photo_array(library: str, name: str) -> np.ndarray:
    if library == "skimage":
        import skimage.data

        return getattr(skimage.data, name)()
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


@lru_cache(maxsize=32)
def _sample_png(name: str) -> bytes:
    if name.startswith("digit "):
        from .small_cnn import load_digits_images

        images, _ = load_digits_images()
        image = images[_held_out_digit_index(int(name.split()[1]))]
    elif name in PHOTOS:
        image = Image.fromarray(_photo_array(*PHOTOS[name]))
    else:
        raise KeyError(f"No sample called {name!r}. Available: {', '.join(sample_names())}.")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def load_sample(name: str) -> Image.Image:
    """A gallery image by name, as an RGB PIL image (through the same loader as uploads)."""
    return load_image(_sample_png(name))
