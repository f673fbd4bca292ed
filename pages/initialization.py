"""Weight initialisation: per-layer activation histograms and gradient statistics of a deep MLP."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import ui
from cnnviz.training.initialization import mlp_statistics, weight_std

st.title("Weight initialisation")
ui.explainer(
    "A deep MLP (no biases) gets standard-normal inputs; each layer computes x ← f(x W) with W ~ N(0, σ²). "
    "Each histogram shows one layer's activations (CS231n lecture 7, after Glorot & Bengio, 2010).\n\n"
    "- **σ too small** (0.01): every layer multiplies the spread by about σ·√width < 1, so the activations "
    "shrink to zero by the last layer, and so do the gradients on the weights: nothing learns.\n"
    "- **σ too large** (tanh, σ = 0.05 at width 4096, or 1): the inputs of tanh are huge, its outputs sit at "
    "±1 where its gradient is 0: saturated, nothing learns either.\n"
    "- **Xavier** (σ = 1/√fan_in; Glorot & Bengio, 2010) keeps the variance constant for tanh; with ReLU, "
    "which zeroes half of its inputs, the activations still halve in variance at every layer.\n"
    "- **Kaiming / MSRA** (σ = √2/√fan_in; He et al., 2015) corrects that factor 2: right for ReLU.\n\n"
    "The gradient table backpropagates a standard-normal gradient from the last layer and shows the spread of "
    "the gradients on each layer's weights and outputs."
)

c1, c2, c3, c4 = st.columns(4)
depth = c1.slider("Depth (layers)", 2, 12, 6, key="init_depth")
width = c2.select_slider("Width (units per layer)", [64, 128, 256, 512, 1024, 2048, 4096], 1024, key="init_width")
activation = c3.radio("Activation", ["tanh", "relu"], horizontal=True, key="init_activation")
scheme = c4.radio("Initialisation", ["normal", "xavier", "kaiming"], horizontal=True, key="init_scheme",
                  format_func={"normal": "N(0, σ²)", "xavier": "Xavier", "kaiming": "Kaiming (MSRA)"}.get)
sigma = st.select_slider("σ of N(0, σ²)", [0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0], 0.01,
                         key="init_sigma", disabled=scheme != "normal")
std = weight_std(scheme, width, sigma)
stats = ui.cached(("init_mlp", depth, width, activation, scheme, sigma),
                  lambda progress: mlp_statistics(depth, width, activation, scheme, sigma, batch=256),
                  "Running the MLP", heavy=False)

label = {"normal": f"N(0, {sigma:g}²)", "xavier": f"Xavier, σ = 1/√{width} = {std:.3g}",
         "kaiming": f"Kaiming, σ = √2/√{width} = {std:.3g}"}[scheme]
columns = min(depth, 6)
rows = int(np.ceil(depth / columns))
relu = activation == "relu"
titles = [f"layer {s.layer}<br>mean {s.mean:+.2f}<br>std {s.std:.3g}" + (f"<br>{s.saturated:.0%} zeros" if relu else "")
          for s in stats]  # one fact a line: six columns share a projector's 1280 px
fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.03,
                    vertical_spacing=0.18 if rows > 1 else 0.1)
for i, s in enumerate(stats):
    row, col = i // columns + 1, i % columns + 1
    values = s.sample[s.sample > 0] if relu else s.sample
    lim = max(float(np.percentile(values, 99.5)) if len(values) else 0.0, 1e-12) * 1.05 if relu else 1.05
    start = 0.0 if relu else -lim
    fig.add_trace(go.Histogram(x=values, xbins=dict(start=start, end=lim, size=(lim - start) / 60),
                               marker_color="#1f77b4", showlegend=False), row=row, col=col)
    fig.update_xaxes(range=[start, lim], row=row, col=col)
fig.update_annotations(font_size=11)
fig.update_layout(height=280 * rows + 60, margin=dict(l=10, r=10, t=125 if relu else 110, b=10), bargap=0.02,
                  title=f"Activations per layer: {activation}, {label}, width {width}"
                        + (" (zeros not drawn)" if relu else ""))
st.plotly_chart(fig, width="stretch")
ui.export.offer("init_hist", "initialisation", {"depth": depth, "width": width, "activation": activation, "scheme": scheme,
                                                "sigma": sigma if scheme == "normal" else None}, figure=fig,
                extra={"per_layer": [{"layer": s.layer, "mean": s.mean, "std": s.std, "saturated": s.saturated} for s in stats]})

left, right = st.columns(2)
with left:
    means = go.Figure()
    layers = [s.layer for s in stats]
    means.add_trace(go.Scatter(x=layers, y=[s.mean for s in stats], mode="lines+markers", name="mean"))
    means.add_trace(go.Scatter(x=layers, y=[s.std for s in stats], mode="lines+markers", name="std"))
    means.update_layout(title="Activation mean and std per layer", xaxis_title="layer", yaxis_title="value",
                        height=320, margin=dict(l=10, r=10, t=40, b=10), xaxis_dtick=1, legend=dict(orientation="h", y=-0.25))
    st.plotly_chart(means, width="stretch")
with right:
    grads = go.Figure()
    grads.add_trace(go.Scatter(x=layers, y=[s.weight_grad_std for s in stats], mode="lines+markers", name="std of dL/dW"))
    grads.add_trace(go.Scatter(x=layers, y=[s.activation_grad_std for s in stats], mode="lines+markers",
                               name="std of dL/d(output)"))
    grads.update_layout(title="Gradient statistics per layer (log scale)", xaxis_title="layer", yaxis_type="log",
                        yaxis_exponentformat="power", height=320, margin=dict(l=10, r=10, t=40, b=10), xaxis_dtick=1,
                        legend=dict(orientation="h", y=-0.25))
    st.plotly_chart(grads, width="stretch")

last = stats[-1]
if last.std < 1e-2 * max(stats[0].std, 1e-12) or last.std < 1e-3:
    st.warning(f"The activations collapse: std {stats[0].std:.3g} in layer 1, {last.std:.2g} in layer {last.layer}. "
               "On the way back the gradient shrinks by the same factor per layer (light line, right), so the "
               "first layers hardly learn, and the last layers' weight gradients are made of near-zero inputs.")
elif activation == "tanh" and last.saturated > 0.3:
    st.warning(f"tanh saturates: {last.saturated:.0%} of layer {last.layer}'s activations are beyond ±0.99, where "
               "its gradient is almost 0.")
elif activation == "relu" and scheme == "xavier":
    st.info("Xavier with ReLU: each layer halves the variance (ReLU zeroes half of the inputs); Kaiming fixes it.")
else:
    st.success(f"Healthy: the activations keep their spread through all {depth} layers.")
st.dataframe(pd.DataFrame({"layer": layers, "mean": [s.mean for s in stats], "std": [s.std for s in stats],
                           ("saturated (|a| > 0.99)" if activation == "tanh" else "zeros"): [s.saturated for s in stats],
                           "std of dL/dW": [s.weight_grad_std for s in stats]}),
             hide_index=True, width="stretch", column_config={"std of dL/dW": st.column_config.NumberColumn(format="%.3g"),
                                                              "std": st.column_config.NumberColumn(format="%.3g")})
