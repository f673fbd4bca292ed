"""Maximally activating patches: the image regions that excite one channel most over a dataset."""

import numpy as np
import streamlit as st
from PIL import ImageDraw

import ui
import ui.datasets
from cnnviz.features import channel_maxima, dead_channels, maximally_activating_patches, receptive_field, spatial_layers

st.title("Maximally activating patches")
ui.explainer(
    "Pick a layer and one of its channels. Every image of the dataset goes through the network; for each image "
    "we keep the channel's strongest response and where in the feature map it happened. The **top-k images** "
    "are shown as the **patch of the input that unit can see**, its receptive field (Girshick et al., 2014; "
    "Zeiler & Fergus, 2014; the lecture's \"maximally activating patches\"). What the patches have in common is "
    "what the channel detects: strokes and corners early, whole parts deeper.\n\n"
    "The receptive field is computed exactly from the kernel size, stride, padding and dilation of every "
    "convolution and pooling on the way to the layer (size grows by (k-1)·stride so far at each layer). For "
    "networks that are not a simple chain (ResNet's shortcuts, Inception's branches) it is measured from input "
    "gradients and marked as empirical. Where the field reaches past the image border the patch is black there."
)

ctx = ui.context()
model = ctx.model
dataset, dataset_key = ui.datasets.choose_dataset(model.name, "patches", big_model_limit=8)
layers = ui.run_or_explain(spatial_layers, model)
default = len(layers) - 1 if model.name == "small_cnn" else len(layers) // 2
c1, c2, c3 = st.columns([2, 1, 1])
layer = c1.selectbox("Layer", layers, index=default, key="patches_layer")
maxima = ui.datasets.cached(
    ("maxima", ctx.model_key, dataset_key, layer),
    lambda progress: channel_maxima(model, dataset, layer, batch_size=64, progress=progress),
    f"Running {len(dataset)} images through {model.name}",
)
channels = maxima.values.shape[1]
channel = int(c2.number_input("Channel", 0, channels - 1, 0, key="patches_channel"))
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
show_context = st.toggle("Show each patch in its image", key="patches_context")
columns = 6
tile = 150
for start in range(0, len(patches), columns):
    cols = st.columns(columns)
    for col, patch in zip(cols, patches[start : start + columns]):
        hit = patch.hit
        if show_context:
            picture = model.preprocessing.view(dataset.images[hit.index]).convert("RGB")
            top, left, bottom, right = patch.box
            ImageDraw.Draw(picture).rectangle([left, top, right - 1, bottom - 1], outline=(255, 40, 40),
                                              width=max(1, picture.width // 64))
        else:
            picture = patch.image
        scale = max(1, tile // max(picture.size))
        col.image(picture.resize((picture.width * scale, picture.height * scale), 0), width=tile,
                  caption=f"{hit.value:.3g} · {dataset.label_name(hit.index)} · #{hit.index}")

top_values = np.sort(maxima.values[:, channel])[::-1]
st.caption(f"Caption: activation · label · image number. The {k}th strongest image reaches "
           f"{top_values[min(k, len(top_values)) - 1]:.3g}; the median image {np.median(top_values):.3g}.")
