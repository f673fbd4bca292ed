"""Maximally activating patches: the image regions that excite one channel most over a dataset,
each with the guided backprop of that unit beside it."""

import numpy as np
import streamlit as st
import torch
from PIL import Image, ImageDraw

import ui
import ui.datasets
from cnnviz.attribution import guided_backprop_units
from cnnviz.display import signed_image, tile as tile_images
from cnnviz.features import channel_maxima, crop_patch, dead_channels, maximally_activating_patches, receptive_field
from cnnviz.models import SMALL_CNN

st.title("Maximally activating patches")
ui.explainer(
    "Pick a layer and one of its channels. Every image of the dataset goes through the network; for each image "
    "we keep the channel's strongest response and where in the feature map it happened. The **top-k images** "
    "are shown as the **patch of the input that unit can see**, its receptive field (Girshick et al., 2014; "
    "Zeiler & Fergus, 2014; the lecture's \"maximally activating patches\"). What the patches have in common is "
    "what the channel detects: strokes and corners early, whole parts deeper.\n\n"
    "**Guided backprop beside each patch** (Springenberg et al., 2015, *Striving for Simplicity*; shown this way "
    "by Zeiler & Fergus, 2014 with their deconvnet). Next to each patch is the gradient of *that very unit* (this "
    "channel, at the position where it fired most in this image) with respect to the input pixels, with every "
    "ReLU on the way back letting only positive gradients through. It is cropped to the same receptive field, "
    "so the two line up pixel for pixel. The patch says *where* the unit looks; the map says *which of those "
    "pixels* drive it: mid gray is 0, light pixels would raise the activation if brighter, dark ones would lower "
    "it. Each map is scaled on its own (to its 99.5th percentile of |gradient|).\n\n"
    "The receptive field is computed exactly from the kernel size, stride, padding and dilation of every "
    "convolution and pooling on the way to the layer (size grows by (k-1)·stride so far at each layer). For "
    "networks that are not a simple chain (ResNet's shortcuts, Inception's branches) it is measured from input "
    "gradients and marked as empirical. Where the field reaches past the image border the patch (and its map) "
    "is black there."
)

ctx = ui.context()
model = ctx.model
dataset, dataset_key = ui.datasets.choose_dataset(model.name, "patches", big_model_limit=8)
layers = list(ui.spatial_layers(ctx))
teaching = ui.teaching_layers(ctx)
default = teaching["last_block"] if model.name == "small_cnn" else teaching["feature"]  # block outputs; the digits' last
c1, c2, c3 = st.columns([2, 1, 1])
layer = c1.selectbox("Layer", layers, index=layers.index(default), key=f"patches_layer_{model.name}")
maxima = ui.cached(
    ("maxima", ctx.model_key, dataset_key, layer),
    lambda progress: channel_maxima(model, dataset, layer, batch_size=64, progress=progress),
    f"Running {len(dataset)} images through {model.name}",
)
channels = maxima.values.shape[1]
strongest = int(maxima.values.max(axis=0).argmax())  # the channel that fires hardest on the dataset, not channel 0
channel = int(c2.number_input("Channel", 0, channels - 1, strongest, key=f"patches_channel_{ctx.model_key}_{dataset_key}_{layer}"))
k = int(c3.slider("Top k", 1, min(36, len(dataset)), min(12, len(dataset)), key="patches_k"))
field = receptive_field(model.module, layer, model.input_size)

st.caption(
    f"{model.label} · {layer}, channel {channel} of {channels} · receptive field {field.size[0]}×{field.size[1]} px, "
    f"stride {field.jump[0]} px ({field.method}) on {model.input_size[1]}×{model.input_size[2]} inputs · "
    f"{len(dataset)} images of {dataset.name}"
)
if channel in set(dead_channels(maxima).tolist()):
    st.warning("This channel is never positive on this dataset (dead): its patches are meaningless.")

patches = maximally_activating_patches(model, dataset, layer, channel, k=k, maxima=maxima)
t1, t2 = st.columns(2)
show_context = t1.toggle("Show each patch in its image", key="patches_context")
show_guided = t2.toggle("Guided backprop beside each patch", value=model.name == SMALL_CNN,
                        key=f"patches_guided_{model.name}",
                        help="Cheap for the small CNN; for big models it runs a guided backward pass per image.")
maps = None
if show_guided:
    hits = [patch.hit for patch in patches]
    maps = ui.cached(
        ("guided patches", ctx.model_key, dataset_key, layer, channel, k),
        lambda progress: ui.run_or_explain(
            guided_backprop_units, model.module, dataset.batch(model.preprocessing, [h.index for h in hits]),
            layer, channel, torch.tensor([[h.row, h.col] for h in hits]), batch_size=8,
            progress=lambda fraction: progress(fraction, f"{round(fraction * len(hits))} of {len(hits)} units"),
        ),
        f"Guided backprop of {len(hits)} units",
    )
    st.caption("Each pair: **left** the patch, **right** the guided backprop of that very unit, cropped to the same "
               "receptive field (mid gray = 0; light: brighter pixels would raise the activation, dark: lower it).")

tile = 160


def enlarged(picture: Image.Image) -> Image.Image:
    """Nearest-neighbour upscale so small patches (a few pixels) stay sharp and visible."""
    scale = max(1, -(-tile // max(picture.size)))
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def framed(picture: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """The whole image with the receptive-field box drawn in red."""
    picture = picture.convert("RGB")
    top, left, bottom, right = box
    ImageDraw.Draw(picture).rectangle([left, top, right - 1, bottom - 1], outline=(255, 40, 40),
                                      width=max(1, picture.width // 64))
    return picture


columns = 3 if maps is not None else 6
shown = []  # the patches as drawn, for the PNG download
for start in range(0, len(patches), columns):
    cols = st.columns(columns, gap="medium" if maps is not None else "small")
    for offset, (col, patch) in enumerate(zip(cols, patches[start : start + columns])):
        hit = patch.hit
        caption = f"{hit.value:.3g} · {dataset.label_name(hit.index)} · #{hit.index}"
        view = model.preprocessing.view(dataset.images[hit.index])
        picture = framed(view, patch.box) if show_context else patch.image
        shown.append(np.asarray(picture.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST)))
        if maps is None:
            col.image(enlarged(picture), width="stretch", caption=caption)
            continue
        gradient = signed_image(maps[start + offset])
        beside = framed(gradient, patch.box) if show_context else crop_patch(gradient, field, hit.row, hit.col)
        pair = col.container(border=True)  # one frame per patch, so each map clearly belongs to its patch
        left, right = pair.columns(2, gap="small")
        left.image(enlarged(picture), width="stretch")
        right.image(enlarged(beside), width="stretch")
        pair.caption(caption)

ui.export.offer("patches", "patches", {"dataset": dataset_key, "layer": layer, "channel": channel, "k": k,
                                       "in_context": show_context}, image=tile_images(shown, 6),
                extra={"model_label": model.label, "hits": [{"image": p.hit.index, "label": dataset.label_name(p.hit.index),
                                                             "activation": p.hit.value, "box": p.box} for p in patches]})
top_values = np.sort(maxima.values[:, channel])[::-1]
st.caption(f"Caption: activation · label · image number. The {k}th strongest image reaches "
           f"{top_values[min(k, len(top_values)) - 1]:.3g}; the median image {np.median(top_values):.3g}.")
