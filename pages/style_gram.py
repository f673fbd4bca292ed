"""Gram matrices: the texture statistics of one layer of VGG-16 (Gatys et al. 2015)."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import ui
from ui import style as ui_style
from cnnviz.style import VGG_LAYERS, gram_matrix
from cnnviz.style.vgg import module_name
from cnnviz.synthesis import image_pixels, target_features

st.title("Gram matrices")
ui.explainer(
    "Take the feature maps of one layer for the style image: C channels, each an H × W map. Multiply every "
    "pair of channels position by position and average over the positions: G_ij = Σ_p F_ip F_jp / (H·W). That "
    "C × C table is the **Gram matrix** (Gatys, Ecker & Bethge, 2015, *Texture Synthesis Using Convolutional "
    "Neural Networks*). It says which features fire **together**, and forgets **where** they fire, so it "
    "describes texture and style, not layout: shuffle the patches of a brick wall and its Gram matrix hardly "
    "changes. The diagonal is how strongly each channel fires on average. Early layers (conv1_1) hold colours "
    "and fine edges; deeper ones (conv4_1, conv5_1) larger motifs. **Correlations** divide G_ij by "
    "√(G_ii G_jj), so strong channels do not hide the pattern."
)

vgg = ui_style.loss_model()
left, right = st.columns([1, 2])
with left:
    image, name = ui_style.style_picker("gram")
    layer = st.selectbox("Layer", list(VGG_LAYERS), index=list(VGG_LAYERS).index("conv2_1"), key="gram_layer")
    size = st.select_slider("Image size (longer side, px)", [128, 192, 256, 384, 512], value=256, key="gram_size")
    correlation = st.toggle("Show correlations", value=False, key="gram_corr")


def compute(progress):
    x = image_pixels(vgg, image, size)
    features = target_features(vgg, vgg.preprocessing.normalize(x), [module_name(layer)])[module_name(layer)]
    return gram_matrix(features.float())[0].cpu().numpy(), tuple(features.shape[1:])


gram, shape = ui.cached(("gram", vgg.label, name, layer, size), compute, f"Gram matrix of {layer}", heavy=False)
values = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)).clip(1e-12)) if correlation else gram
left.image(image, caption=f"{name} · {layer}: {shape[0]} channels of {shape[1]} × {shape[2]} · {vgg.label}", width="stretch")
top = float(np.percentile(np.abs(values), 99.5))  # a few strong channels would hide the rest
fig = go.Figure(go.Heatmap(z=values, colorscale="Viridis", zmax=top, zmin=min(0.0, float(values.min())),
                           colorbar=dict(title="corr." if correlation else "G_ij")))
fig.update_layout(
    title=f"{'Correlations' if correlation else 'Gram matrix'} of {layer} ({shape[0]} × {shape[0]}), colours clipped at the 99.5th percentile",
    xaxis_title="channel j", yaxis_title="channel i", yaxis_autorange="reversed", height=560,
    margin=dict(l=10, r=10, t=60, b=10),
)
right.plotly_chart(fig, width="stretch", key="gram_heatmap")
ui.export.offer("gram", "gram", {"style_image": name, "layer": layer, "size": size, "correlation": correlation},
                figure=fig, extra={"model_label": vgg.label, "feature_shape": list(shape)})
