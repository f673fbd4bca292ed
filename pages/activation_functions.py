"""Activation functions: f and f′ with their saturated regions, values at −10, 0 and 10, and why
zero-centred outputs matter (the zig-zag of all-positive inputs)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import ui
from cnnviz.training.activation_functions import ACTIVATION_FUNCTIONS, curve, saturated_regions, zigzag

st.title("Activation functions")
ui.explainer(
    "A neuron computes f(w·x + b); **f** is its activation function. Its **derivative f′** is what "
    "backpropagation multiplies the upstream gradient by, so where f′ ≈ 0 (**saturated**, shaded) almost no "
    "gradient flows and the weights below stop learning. Sigmoid and tanh saturate at both ends; ReLU never "
    "saturates for x > 0 but has f′ = 0 for x < 0, so a unit that is never positive is **dead**; Leaky ReLU, "
    "PReLU, ELU, SELU and Maxout keep some gradient there. Sigmoid and ReLU outputs are never negative "
    "(**not zero-centred**): the next layer's inputs are then all positive, and the gradient on its weights has "
    "the same sign in every component, which forces a zig-zag path (below).\n\n"
    "Sources: CS231n lecture 7; Krizhevsky et al. 2012 (ReLU), Maas et al. 2013 (Leaky ReLU), He et al. 2015 "
    "(PReLU), Clevert et al. 2016 (ELU), Klambauer et al. 2017 (SELU), Goodfellow et al. 2013 (Maxout), "
    "Hendrycks & Gimpel 2016 (GELU), Ramachandran et al. 2017 (SiLU/Swish)."
)

names = list(ACTIVATION_FUNCTIONS)
c1, c2, c3 = st.columns([3, 1, 1])
chosen = c1.multiselect("Functions", names, default=["sigmoid", "tanh", "ReLU", "Leaky ReLU"], key="act_fns")
span = c2.slider("Range of x (±)", 1.0, 20.0, 6.0, 0.5, key="act_range")
threshold = c3.select_slider("Saturated where |f′| <", [0.001, 0.01, 0.05, 0.1], 0.05, key="act_threshold")

params: dict[str, dict] = {}
if {"Leaky ReLU", "PReLU", "ELU"} & set(chosen):
    cols = st.columns(3)
    if "Leaky ReLU" in chosen:
        params["Leaky ReLU"] = {"alpha": cols[0].slider("Leaky ReLU slope α", 0.0, 0.5, 0.01, 0.01, key="act_leaky")}
    if "PReLU" in chosen:
        params["PReLU"] = {"alpha": cols[1].slider("PReLU α (learned in a network)", -0.5, 1.0, 0.25, 0.05, key="act_prelu")}
    if "ELU" in chosen:
        params["ELU"] = {"alpha": cols[2].slider("ELU α", 0.1, 3.0, 1.0, 0.1, key="act_elu")}
if "Maxout" in chosen:
    st.caption("Maxout = max(w₁x + b₁, w₂x + b₂): move the two lines.")
    cols = st.columns(4)
    params["Maxout"] = {
        "w1": cols[0].slider("w₁", -2.0, 2.0, 1.0, 0.1, key="act_w1"),
        "b1": cols[1].slider("b₁", -3.0, 3.0, 0.0, 0.1, key="act_b1"),
        "w2": cols[2].slider("w₂", -2.0, 2.0, -0.5, 0.1, key="act_w2"),
        "b2": cols[3].slider("b₂", -3.0, 3.0, 0.0, 0.1, key="act_b2"),
    }
if not chosen:
    st.info("Pick at least one function.")
    st.stop()

x = np.linspace(-span, span, 801)
fig = make_subplots(rows=len(chosen), cols=2, subplot_titles=[t for n in chosen for t in (f"{n}: f(x)", f"{n}: f′(x)")],
                    vertical_spacing=0.5 / max(1, len(chosen)) if len(chosen) > 1 else 0.1, horizontal_spacing=0.08)
table = []
for row, name in enumerate(chosen, start=1):
    f, g = curve(name, x, **params.get(name, {}))
    fig.add_trace(go.Scatter(x=x, y=f, mode="lines", name=name, line=dict(color="#1f77b4")), row=row, col=1)
    fig.add_trace(go.Scatter(x=x, y=g, mode="lines", name=f"{name}′", line=dict(color="#d62728")), row=row, col=2)
    for lo, hi in saturated_regions(x, g, threshold):  # after the traces: plotly skips shapes on empty subplots
        for col in (1, 2):
            fig.add_vrect(x0=lo, x1=hi, fillcolor="red", opacity=0.12, line_width=0, row=row, col=col)
    if name == "Maxout":
        p = params["Maxout"]
        fig.add_trace(go.Scatter(x=x, y=p["w1"] * x + p["b1"], mode="lines", line=dict(dash="dot", color="gray"),
                                 name="line 1"), row=row, col=1)
        fig.add_trace(go.Scatter(x=x, y=p["w2"] * x + p["b2"], mode="lines", line=dict(dash="dash", color="gray"),
                                 name="line 2"), row=row, col=1)
        fig.update_yaxes(range=[float(f.min()) - 1, float(f.max()) + 1], row=row, col=1)
    at = np.array([-10.0, 0.0, 10.0])
    fa, ga = curve(name, at, **params.get(name, {}))
    info = ACTIVATION_FUNCTIONS[name]
    table.append({"function": name, "f(−10)": fa[0], "f(0)": fa[1], "f(10)": fa[2], "f′(−10)": ga[0], "f′(0)": ga[1],
                  "f′(10)": ga[2], "zero-centred": info.zero_centred})
fig.update_layout(height=230 * len(chosen) + 60, showlegend=False, margin=dict(l=10, r=10, t=40, b=10))
fig.update_xaxes(title_text="x", row=len(chosen))
st.plotly_chart(fig, width="stretch")
ui.export.offer("act_curves", "activations_fx", {"functions": chosen, "range": span, "saturation_threshold": threshold,
                                                 "function_parameters": params}, figure=fig)
st.caption(f"Shaded: saturated, |f′(x)| < {threshold}: almost no gradient flows back through the unit there. "
           "At a kink (x = 0 for ReLU) PyTorch uses the derivative 0.")

st.subheader("Values and gradients at x = −10, 0 and 10")
st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch",
             column_config={k: st.column_config.NumberColumn(format="%.4g") for k in table[0] if k not in ("function", "zero-centred")})
for name in chosen:
    info = ACTIVATION_FUNCTIONS[name]
    st.markdown(f"**{name}** $\\;{info.formula}$ — {info.note}")

st.subheader("Why zero-centred outputs matter")
c1, c2 = st.columns([1, 2])
steps = c1.slider("Gradient steps", 5, 100, 30, key="act_steps")
lr = c1.slider("Step size", 0.1, 1.5, 0.5, 0.1, key="act_lr")
z = zigzag(steps=steps, lr=lr)
c1.markdown(
    f"A linear neuron learns w towards w* = {z.target} (one component up, one down). With **all-positive "
    f"inputs** (like the outputs of a sigmoid or ReLU layer), dL/dw = (dL/df)·x has one sign in both "
    f"components in **{z.positive_same_sign:.0%}** of the steps, so w can only move towards the upper right or "
    f"the lower left: a zig-zag. With **zero-centred** inputs: {z.centred_same_sign:.0%}."
)
fig = go.Figure()
fig.add_trace(go.Scatter(x=z.positive_path[:, 0], y=z.positive_path[:, 1], mode="lines+markers",
                         name="all-positive inputs", marker=dict(size=5)))
fig.add_trace(go.Scatter(x=z.centred_path[:, 0], y=z.centred_path[:, 1], mode="lines+markers",
                         name="zero-centred inputs", marker=dict(size=5)))
fig.add_trace(go.Scatter(x=[z.target[0]], y=[z.target[1]], mode="markers", name="w*",
                         marker=dict(symbol="star", size=16, color="black")))
fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", name="start", marker=dict(size=10, color="gray")))
fig.update_layout(xaxis_title="w₁", yaxis_title="w₂", height=420, yaxis_scaleanchor="x",
                  margin=dict(l=10, r=10, t=20, b=10), legend=dict(orientation="h", y=-0.2))
c2.plotly_chart(fig, width="stretch")
