"""Preprocessing: a 2-D point cloud zero-centred, normalised, decorrelated and whitened; an image
dataset's mean image and per-channel mean and std, and what subtracting them does."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import ui
import ui.datasets
from cnnviz.display import upscale
from cnnviz.training.data import images_tensor
from cnnviz.training.preprocess_demo import covariance, image_statistics, point_cloud, preprocess_stages, subtract

st.title("Preprocessing")
ui.explainer(
    "Networks learn faster when their inputs are **zero-centred** (the mean subtracted) and on a common "
    "scale (**normalised**: divided by the standard deviation), because a loss surface over badly scaled, "
    "off-centre inputs is long and thin, and small changes of the weights change the output very "
    "differently along different directions (CS231n lecture 7; LeCun et al., *Efficient BackProp*, 1998). "
    "**PCA** rotates the data onto its principal axes (the covariance becomes diagonal: **decorrelated**); "
    "**whitening** also scales each axis to unit variance (covariance = identity).\n\n"
    "For images one usually only centres and scales: AlexNet subtracted the **mean image** (one value per "
    "pixel and channel), VGG the **per-channel mean** (three numbers), ResNet and the torchvision models also "
    "divide by the **per-channel std**. The statistics come from the training set only, and the same numbers "
    "are used at test time."
)

st.subheader("A 2-D point cloud")
c1, c2, _ = st.columns([2, 1, 3])
n = c1.slider("Points", 50, 2000, 400, 50, key="prep_points")
seed = c2.number_input("Seed", 0, 1000, 0, key="prep_seed")
stages = preprocess_stages(point_cloud(n, int(seed)))
fig = make_subplots(rows=1, cols=len(stages), subplot_titles=list(stages), horizontal_spacing=0.03)
lim = max(float(np.abs(p).max()) for p in stages.values()) * 1.05
for col, (name, points) in enumerate(stages.items(), start=1):
    fig.add_trace(go.Scattergl(x=points[:, 0], y=points[:, 1], mode="markers", marker=dict(size=3, opacity=0.6),
                               showlegend=False), row=1, col=col)
    fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="x", size=10, color="red"),
                             showlegend=False), row=1, col=col)
    fig.update_xaxes(range=[-lim, lim], row=1, col=col)
    fig.update_yaxes(range=[-lim, lim], row=1, col=col)
fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10))
st.plotly_chart(fig, width="stretch")
ui.export.offer("prep_cloud", "point_cloud", {"points": n, "seed": int(seed)}, figure=fig)
covs = " · ".join(f"{name}: [[{c[0, 0]:.2f}, {c[0, 1]:.2f}], [{c[1, 0]:.2f}, {c[1, 1]:.2f}]]"
                  for name, c in ((k, covariance(v)) for k, v in stages.items()))
st.caption(f"All panels share one scale; the red cross is the origin. Covariances: {covs}.")

st.subheader("An image dataset")
dataset, dataset_key = ui.datasets.choose_dataset("", "prep", big_model_limit=500)
c1, c2 = st.columns([1, 3])
size = int(c1.select_slider("Resized to (px)", [16, 32, 48, 64], 32, key="prep_size"))
pixels = ui.cached(("prep_pixels", dataset_key, size),
                   lambda progress: images_tensor(dataset, size, 3), f"Reading {len(dataset)} images")
stats = image_statistics(pixels)
mean_image = (np.clip(stats.mean_image, 0, 1) * 255).round().astype(np.uint8)
with c1:
    st.image(upscale(mean_image, 160), caption=f"Mean image of {len(dataset)} images", width="stretch")
    for channel, (m, s) in enumerate(zip(stats.channel_mean, stats.channel_std)):
        st.markdown(f"**{'RGB'[channel]}**: mean {m:.3f}, std {s:.3f}")
mode = c2.radio("Subtract", ["mean image", "channel mean", "channel mean and std"], horizontal=True, key="prep_mode")
shown = min(8, len(dataset))
after = subtract(pixels[:shown], stats, mode)
fig = make_subplots(rows=2, cols=shown, horizontal_spacing=0.01, vertical_spacing=0.08)
scale = max(float(np.abs(after).max()), 1e-6)
for i in range(shown):
    fig.add_trace(go.Image(z=(pixels[i].numpy().transpose(1, 2, 0) * 255).round()), row=1, col=i + 1)
    centred = ((after[i] / scale + 1) / 2 * 255).clip(0, 255).round()
    fig.add_trace(go.Image(z=centred), row=2, col=i + 1)
fig.update_xaxes(visible=False)
fig.update_yaxes(visible=False)
fig.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10))
c2.plotly_chart(fig, width="stretch")
c2.caption(f"Top: {shown} images of {dataset.name}. Bottom: after subtracting the {mode}, drawn with 0 as middle gray "
           f"(±{scale:.2f} → black / white).")
hist = go.Figure()
hist.add_trace(go.Histogram(x=pixels.numpy().ravel()[::7], name="pixels", opacity=0.6, nbinsx=60))
hist.add_trace(go.Histogram(x=subtract(pixels, stats, mode).ravel()[::7], name=f"after: {mode}", opacity=0.6, nbinsx=60))
hist.update_layout(barmode="overlay", height=260, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="value",
                   yaxis_title="count", title="All values, before and after", legend=dict(orientation="h", y=-0.3))
c2.plotly_chart(hist, width="stretch")
