"""Filters: the learned convolution kernels, as pictures; for the small CNN, across training."""

import numpy as np
import plotly.express as px
import streamlit as st

import ui
import ui.training
from cnnviz.features import conv_layers, conv_weight, filter_grid
from cnnviz.models import SMALL_CNN, SMALL_CNN_LABEL
from cnnviz.small_cnn import load_history

st.title("Filters")
ui.explainer(
    "Each small picture is one **filter** (kernel) of a convolution layer: the pattern of weights it slides "
    "over its input. A filter responds most where the input looks like it. Each filter is scaled to its own "
    "range (darkest = most negative weight, brightest = most positive) and enlarged without smoothing, so "
    "every square is one weight.\n\n"
    "Filters of the **first layer** look at the image itself, so they can be drawn in colour (RGB) or, for "
    "one-channel inputs such as the digits, in gray; trained networks learn oriented edges, colour blobs and "
    "gratings there (Krizhevsky et al., 2012; Zeiler & Fergus, 2014). Filters of **deeper layers** look at "
    "the previous layer's feature maps: one gray grid per input channel, which is why they are hard to "
    "read directly. With **random weights** the filters are noise. For the small CNN, and for a network "
    "trained on the Train page, the slider replays training: epoch 0 is the random initialisation."
)

ctx = ui.context()
model = ctx.model
layers = conv_layers(model.module)
if not layers:
    st.info("This model has no convolution layer.")
    st.stop()

c1, c2, c3 = st.columns([2, 1, 1])
layer = c1.selectbox("Convolution layer", layers, key="filters_layer")
weight = conv_weight(model.module, layer)
sort_by_norm = c2.checkbox("Sort by L2 norm", key="filters_sort", help="Strongest filters first.")
epoch_caption = ""
history = ui.training.session_history(ctx.model_key)  # a network trained on the Train page, this session
if history is None and model.name == SMALL_CNN and model.weights == SMALL_CNN_LABEL:
    history = load_history()
if history is not None:
    history = dict(enumerate(history)) if isinstance(history, list) else dict(history)
    last = max(history)
    epoch = c3.slider("Training epoch", 0, last, last, key="filters_epoch", help="0 is the random initialisation.")
    weight = history[epoch][f"{layer}.weight"]
    epoch_caption = f", after epoch {epoch} of {last}" if epoch else ", at initialisation (epoch 0)"

out_channels, in_channels, kh, kw = weight.shape
in_channel = None
if in_channels not in (1, 3):
    in_channel = int(st.slider("Input channel shown", 0, in_channels - 1, 0, key="filters_in_channel",
                               help="Deeper filters have one slice per input channel; pick which one to draw."))
mode = "RGB" if in_channels == 3 else "gray"
max_filters = 256
columns = min(16, int(np.ceil(np.sqrt(min(out_channels, max_filters)))))
grid, order = ui.run_or_explain(filter_grid, weight, in_channel=in_channel, sort_by_norm=sort_by_norm,
                                tile_px=max(6, 560 // columns // max(kh, kw) * max(kh, kw)), columns=columns,
                                max_filters=max_filters)

left, right = st.columns([3, 2])
with left:
    what = f"input channel {in_channel}" if in_channel is not None else mode
    st.image(grid, caption=f"{model.label} · {layer}: {min(out_channels, max_filters)} of {out_channels} filters, "
             f"{kh}×{kw}, {what}{epoch_caption}" + (", sorted by L2 norm" if sort_by_norm else ""), width="stretch")
    ui.export.offer("filters", "filters", {"layer": layer, "sort_by_norm": sort_by_norm, "input_channel": in_channel,
                                           "epoch": st.session_state.get("filters_epoch") if history is not None else None},
                    image=grid, extra={"model_label": model.label, "filter_order": order,
                                       "filter_norms": weight.detach().float().flatten(1).norm(dim=1)})
with right:
    norms = weight.detach().float().flatten(1).norm(dim=1).cpu().numpy()
    fig = px.bar(x=np.arange(out_channels).astype(str)[order], y=norms[order],
                 labels={"x": "filter", "y": "L2 norm of the weights"}, title="Filter norms")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10), xaxis={"type": "category"})
    st.plotly_chart(fig, width="stretch")
    st.caption("Tiles are read left to right, top to bottom, in the order of the bars.")

if layer == layers[0] and max(kh, kw) <= 3 and model.pretrained:
    st.info(
        f"These first-layer filters are {kh}×{kw}: nine weights per colour channel hold **colour blobs and simple "
        "gradients**, not the large oriented edge and grating patterns of AlexNet's 11×11 first layer (Krizhevsky "
        "et al., 2012). Small-kernel networks (VGG, SqueezeNet, EfficientNet, this one) build those patterns a few "
        "layers deeper, where stacked 3×3 kernels see a larger patch of the image. To see them, maximise an early "
        "channel on the Class & neuron visualization page (for example the second or third convolution)."
    )
    st.page_link("pages/class_visualization.py", label="Neuron visualization of early channels",
                 icon=":material/auto_awesome:")
