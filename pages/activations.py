"""Activations: every feature map of a layer for the current image, channel statistics, dead channels."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
import ui.datasets
from cnnviz import display
from cnnviz.features import channel_maxima, channel_stats, dead_channels, feature_map_grid, feature_maps

st.title("Activations")
ui.explainer(
    "A convolution layer turns its input into a stack of **feature maps**, one per channel (filter): each map "
    "shows where in the image that channel's pattern was found, brighter = stronger (Zeiler & Fergus, 2014; "
    "Yosinski et al., 2015, deep visualization toolbox). Early layers respond to edges and strokes, deeper ones "
    "to larger parts; the maps shrink as pooling and strides go deeper.\n\n"
    "The **statistics** summarise each channel for this image: its mean, its maximum and the fraction of "
    "positions that are exactly zero (a ReLU sets every negative value to zero). A channel that stays zero on "
    "**every image of a dataset** is **dead**: its ReLU never lets anything through, so it never learns again. "
    "Many dead channels are a symptom of a too high learning rate. Pick a channel to see its map large and "
    "laid over the image as the model sees it."
)

ctx = ui.context()
model = ctx.model
layers = list(ui.spatial_layers(ctx))
default = next((i for i, n in enumerate(layers) if "relu" in type(dict(model.module.named_modules())[n]).__name__.lower()), 0)
c1, c2 = st.columns([2, 1])
layer = c1.selectbox("Layer", layers, index=default, key="activations_layer")
shared = c2.checkbox("One colour scale for all maps", key="activations_shared",
                     help="Off: each map uses its own range. On: weak and dead maps look dark.")

act = feature_maps(model.module, ctx.x, [layer])[layer][0]  # (C, h, w)
channels, h, w = act.shape
shown = min(channels, 256)
columns = min(16, int(np.ceil(np.sqrt(shown))))
grid = feature_map_grid(act[:shown], columns=columns, tile_px=max(8, 640 // columns), shared_scale=shared)
stats = channel_stats(act)

left, right = st.columns([3, 2])
with left:
    st.image(grid, caption=f"{model.label} · {layer}: {shown} of {channels} feature maps, {h}×{w} each, "
             f"for {ctx.image_name} (left to right, top to bottom: channel 0, 1, ...)", width="stretch")
    ui.export.offer("activations", "activations", {"layer": layer, "shared_scale": shared, "channels_shown": shown},
                    image=grid, extra={"model_label": model.label, "channels": channels, "map_size": [h, w]})
with right:
    fig = go.Figure()
    fig.add_bar(x=np.arange(channels), y=stats["max"], name="maximum")
    fig.add_bar(x=np.arange(channels), y=stats["mean"], name="mean")
    fig.update_layout(barmode="overlay", height=260, margin=dict(l=10, r=10, t=40, b=10), title="Per channel, this image",
                      xaxis_title="channel", yaxis_title="activation", legend=dict(orientation="h", y=-0.3))
    st.plotly_chart(fig, width="stretch")
frame = pd.DataFrame({"channel": np.arange(channels), "mean": stats["mean"], "max": stats["max"],
                      "zeros": stats["zero_fraction"]})
with st.expander("Per channel, as a table"):  # full width: in the narrow column its last column was cut
    st.dataframe(frame, hide_index=True, height=220, width="stretch",
                 column_config={"zeros": st.column_config.ProgressColumn("fraction of zeros", min_value=0.0, max_value=1.0,
                                                                         format="percent")})

st.subheader("Dead channels over a dataset")
dataset, dataset_key = ui.datasets.choose_dataset(model.name, "activations", big_model_limit=8)
maxima = ui.cached(
    ("maxima", ctx.model_key, dataset_key, layer),
    lambda progress: channel_maxima(model, dataset, layer, batch_size=64, progress=progress),
    f"Running {len(dataset)} images through {model.name}",
)
dead = dead_channels(maxima)
if len(dead):
    st.warning(f"{len(dead)} of {channels} channels of {layer} are never positive on any of the {len(dataset)} images "
               f"of {dataset.name}: {', '.join(map(str, dead[:40]))}{' ...' if len(dead) > 40 else ''}.")
else:
    st.success(f"No dead channel: every channel of {layer} is positive somewhere on the {len(dataset)} images of {dataset.name}.")

st.subheader("One channel, large")
c1, c2 = st.columns([1, 1])
channel = int(c1.number_input("Channel", 0, channels - 1, int(np.argmax(stats["max"])), key="activations_channel",
                              help="Starts on the channel with the strongest response to this image."))
alpha = c2.slider("Overlay opacity", 0.0, 1.0, 0.6, key="activations_alpha")
view = model.preprocessing.view(ctx.image).convert("RGB")
heat = display.normalize(act[channel])
size = 320
left, right = st.columns(2)
left.image(display.upscale(display.colormap(heat, ui.colormap("Viridis")), size), width="stretch",
           caption=f"channel {channel}: max {stats['max'][channel]:.3g}, {stats['zero_fraction'][channel]:.0%} zeros"
           + (" · dead over the dataset" if channel in set(dead.tolist()) else ""))
right.image(display.overlay(view.resize((size, size), 0), heat, alpha=alpha, name=ui.colormap("Viridis")), width="stretch",
            caption="over the image as the model sees it")
