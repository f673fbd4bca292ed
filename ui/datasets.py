"""Streamlit helpers for the pages that work on many images: the dataset picker ("Look inside"), and the
images to compute on plus held-out images (universal perturbations)."""

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
    photo_crops_dataset,
    photos_dataset,
    torchvision_dataset,
    uploaded_images_dataset,
    zip_dataset,
)
from cnnviz.models import SMALL_CNN
from ui import IMAGE_TYPES

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
    default_limit = 500 if small else max(10, big_model_limit)  # the digits kept from the small CNN: at least 10
    limit = right.number_input("Images", 10, LIMITS.get(name, 5000), default_limit, step=50, key=f"{key}_limit")
    if name in LIMITS:
        return _offline(name, int(limit)), f"{name}:{limit}"
    with st.spinner(f"Loading {name} (downloading once if a network is there)..."):
        try:
            return _torchvision(name, int(limit)), f"{name}:{limit}"
        except ValueError as error:
            st.error(str(error))
            st.stop()


CROPS, FOLDER, ZIPPED = "crops of the gallery photos (offline)", "a folder of your photos", "a zip of your photos"


@st.cache_resource(show_spinner="Loading the digits…", max_entries=8)
def _digit_split(mnist: bool, train: int, held_out: int) -> tuple[ImageDataset, ImageDataset]:
    if mnist:
        return mnist_dataset("train", limit=train), mnist_dataset("test", limit=held_out)
    rest, kept = digits_dataset().split(held_out, seed=0)
    return rest.subset(range(min(train, len(rest)))), kept


@st.cache_resource(show_spinner="Cutting crops…", max_entries=8)
def _crop_split(train: int, held_out: int) -> tuple[ImageDataset, ImageDataset]:
    return photo_crops_dataset(train, seed=0), photo_crops_dataset(held_out, seed=1)


@st.cache_resource(show_spinner="Reading your photos…", max_entries=4)
def _upload_split(digest: str, _files: tuple[bytes, ...], zipped: bool) -> tuple[ImageDataset, ImageDataset]:
    if zipped:
        dataset = zip_dataset(_files[0], tempfile.mkdtemp(prefix="cnnviz_zip_"), name="your photos")
    else:
        dataset = uploaded_images_dataset(_files)
    if len(dataset) < 2:
        raise ValueError("At least 2 readable photos are needed: some to compute on, some held out.")
    return dataset.split(0.25, seed=0)


def choose_split(model_name: str, key: str) -> tuple[ImageDataset, ImageDataset, str]:
    """Widgets for images to compute on and held-out images; returns both and a key for caches.

    The small CNN gets MNIST's training digits and its held-out digits (scikit-learn's digits when MNIST
    is not fetched). ImageNet models get random crops of the gallery photos (different crops held out),
    or your own photos, a folder or a zip, of which a seeded quarter is held out.
    """
    left, right = st.columns(2)
    if model_name == SMALL_CNN:
        mnist = mnist_available()
        train = left.number_input("Digits to compute on", 20, 4000 if mnist else 1400, 500, step=100, key=f"{key}_train")
        held = right.number_input("Held-out digits", 20, 1000 if mnist else 360, 300, step=100, key=f"{key}_held")
        if not mnist:
            st.caption("MNIST is not fetched (`python -m cnnviz fetch --sources`), so scikit-learn's digits are used.")
        return *_digit_split(mnist, int(train), int(held)), f"digits:{mnist}:{train}:{held}"
    source = st.radio("Images", [CROPS, FOLDER, ZIPPED], horizontal=True, key=f"{key}_source")
    if source == CROPS:
        train = left.number_input("Crops to compute on", 4, 400, 32, step=8, key=f"{key}_train_crops")
        held = right.number_input("Held-out crops", 4, 400, 32, step=8, key=f"{key}_held_crops")
        st.caption(f"A small sample: {train} random crops (half of them mirrored) of the 8 gallery photos to compute on, "
                   f"and {held} other crops of the same photos held out. The held-out crops overlap the photos v saw, "
                   "so their fooling rate flatters v; upload your own photos for a fairer test.")
        return *_crop_split(int(train), int(held)), f"crops:{train}:{held}"
    if source == FOLDER:
        files = st.file_uploader("A folder of photos", type=IMAGE_TYPES, accept_multiple_files="directory", key=f"{key}_folder")
        blobs = tuple(f.getvalue() for f in files or [])
    else:
        upload = st.file_uploader("A zip of photos", type=["zip"], key=f"{key}_zip")
        blobs = (upload.getvalue(),) if upload is not None else ()
    if not blobs:
        st.info("Choose your photos: a seeded quarter of them is held out, the rest is used to compute on.")
        st.stop()
    digest = hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in blobs)).hexdigest()
    try:
        compute_on, held_out = _upload_split(digest, blobs, source == ZIPPED)
    except ValueError as error:
        st.error(str(error))
        st.stop()
    return compute_on, held_out, f"upload:{digest}"
