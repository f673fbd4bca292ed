"""Sample images: real photos shipped by scikit-image and scikit-learn, and held-out handwritten
digits: MNIST digits the bundled small CNN never trained on (from the pinned MNIST source), or
scikit-learn's digits when that source is not fetched yet."""

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
    """One held-out digit per class: "digit 0" ... "digit 9" (MNIST when fetched, else scikit-learn)."""
    return [f"digit {d}" for d in range(10)]


DEFAULT_DIGIT = "digit 3"


def sample_names() -> list[str]:
    """All gallery entries: digits first, then photos."""
    return [*digit_sample_names(), *PHOTOS]


@lru_cache(maxsize=None)
def _held_out_digit(digit: int, mnist: bool) -> Image.Image:
    """The first held-out digit of class ``digit``: MNIST's 28×28, or scikit-learn's at 32×32."""
    if mnist:
        from .data import mnist_arrays, mnist_split

        pixels, labels = mnist_arrays()
        index = next(i for i in mnist_split()[1] if labels[i] == digit)
        return Image.fromarray(pixels[index]).convert("RGB")
    from .small_cnn import digits_split, load_digits_images

    images, labels = load_digits_images()
    _, test_idx = digits_split()
    return images[int(next(i for i in sorted(test_idx) if labels[i] == digit))]


def _photo_array(library: str, name: str) -> np.ndarray:
    if library == "skimage":
        import skimage.data

        return getattr(skimage.data, name)()
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


def _sample_png(name: str) -> bytes:
    from .data import mnist_available

    return _sample_png_cached(name, name in digit_sample_names() and mnist_available())


@lru_cache(maxsize=32)
def _sample_png_cached(name: str, mnist: bool) -> bytes:
    if name in digit_sample_names():
        image = _held_out_digit(int(name.split()[1]), mnist)
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
