"""Streamlit helpers for the "Look inside" pages: the dataset picker."""

from __future__ import annotations

import hashlib
import tempfile
import streamlit as st

from cnnviz.data import (
    TORCHVISION_DATASETS,
    ImageDataset,
    digits_dataset,
    mnist_available,
    mnist_dataset,
    photos_dataset,
    torchvision_dataset,
    zip_dataset,
)
from cnnviz.models import SMALL_CNN

MNIST5K, DIGITS, PHOTOS, ZIP = "MNIST digits (5,000, pinned source)", "digits (scikit-learn)", "sample photos", "your zip of images"
LIMITS = {MNIST5K: 5000, DIGITS: 1797}


@st.cache_resource(show_spinner="Loading the dataset...", max_entries=8)
def _offline(name: str, limit: int) -> ImageDataset:
    if name == MNIST5K:
        return mnist_dataset("all", limit=limit)
    return digits_dataset(limit=limit) if name == DIGITS else photos_dataset()


@st.cache_resource(show_spinner="Reading the zip...", max_entries=4)
def _from_zip(digest: str, _data: bytes) -> ImageDataset:
    target = tempfile.mkdtemp(prefix="cnnviz_zip_")
    return zip_dataset(_data, target, name="your zip")


@st.cache_resource(show_spinner=False, max_entries=4)
def _torchvision(name: str, limit: int) -> ImageDataset:
    return torchvision_dataset(name, limit=limit)


def choose_dataset(model_name: str, key: str, big_model_limit: int = 100, prefer_digits: bool = False) -> tuple[ImageDataset, str]:
    """Dataset widgets (in the main area); returns the dataset and a key for caches.

    The small CNN defaults to its MNIST digits (scikit-learn's when MNIST is not fetched); other
    models to the sample photos (or digits with ``prefer_digits``), with small default sizes so big
    models stay quick.
    """
    small = model_name == SMALL_CNN
    has_mnist = mnist_available()
    options = [*([MNIST5K] if has_mnist else []), DIGITS, PHOTOS, ZIP, *TORCHVISION_DATASETS]
    digits = MNIST5K if has_mnist else DIGITS
    default = digits if small or prefer_digits else PHOTOS
    left, right = st.columns([2, 1])
    name = left.selectbox("Dataset", options, index=options.index(default), key=f"{key}_dataset")
    if name == PHOTOS:
        return _offline(PHOTOS, 0), PHOTOS
    if name == ZIP:
        upload = left.file_uploader("Zip of images, one folder per class", type=["zip"], key=f"{key}_zip")
        if upload is None:
            st.info("Choose a zip file: one folder per class, with PNG or JPEG images inside.")
            st.stop()
        data = upload.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        try:
            dataset = _from_zip(digest, data)
        except ValueError as error:
            st.error(str(error))
            st.stop()
        if dataset.skipped:
            st.caption("Skipped: " + ", ".join(f"{n} {reason}" for reason, n in dataset.skipped.items()) + ".")
        return dataset, f"zip:{digest}"
    default_limit = 500 if small else big_model_limit
    limit = right.number_input("Images", 10, LIMITS.get(name, 5000), default_limit, step=50, key=f"{key}_limit")
    if name in LIMITS:
        return _offline(name, int(limit)), f"{name}:{limit}"
    with st.spinner(f"Loading {name} (downloading once if a network is there)..."):
        try:
            return _torchvision(name, int(limit)), f"{name}:{limit}"
        except ValueError as error:
            st.error(str(error))
            st.stop()
