"""Texture synthesis: match the Gram matrices of more and more layers (Gatys et al. 2015)."""

from dataclasses import replace

import streamlit as st

import ui
from ui import optimization
from ui import style as ui_style
from cnnviz.style import STYLE_LAYERS, texture_row
from cnnviz.style.gatys import TEXTURE_SIZE, TEXTURE_STEPS
from cnnviz.synthesis import MAX_STEPS, image_pixels

st.title("Texture synthesis")
ui.explainer(
    "Start from noise and change the pixels until the **Gram matrices** of chosen VGG-16 layers equal those of "
    "the example texture (Gatys, Ecker & Bethge, 2015, *Texture Synthesis Using Convolutional Neural "
    "Networks*). Nothing asks for the example's layout, only for the same feature statistics, so a new "
    "texture grows. The row matches conv1_1 alone, then conv1_1 to conv2_1, and so on to conv5_1. The first "
    "layer only sees 3 × 3 pixels, so it recovers colours and grain; each deeper layer sees a larger region "
    "and adds **larger structures** (whole bricks, pebbles). The loss is Σ_l ‖G_l(x) − A_l‖² / ‖A_l‖² over the "
    "layers, with the layers weighted equally; Adam changes the pixels."
)

vgg = ui_style.loss_model()
left, right = st.columns([1, 2])
with left:
    image, name = ui_style.style_picker("tex")
    st.image(image, caption=name, width="stretch")
with right:
    c1, c2, c3 = st.columns(3)
    size = c1.select_slider("Texture size (px)", [64, 96, 128, 192, 256], value=TEXTURE_SIZE, key="tex_size")
    steps = c2.slider("Steps per texture", 10, MAX_STEPS, TEXTURE_STEPS, step=10, key="tex_steps")
    lr = c3.select_slider("Step size (Adam, pixel units)", [0.005, 0.01, 0.02, 0.05, 0.1], value=0.02, key="tex_lr")
    st.caption(f"Five textures of {size} × {size} px, from the layers {', '.join(STYLE_LAYERS)}.")
params = {"model": vgg.name, "weights": vgg.weights, "style": name, "size": size, "steps": steps, "lr": lr}
labels = [STYLE_LAYERS[0]] + [f"{STYLE_LAYERS[0]} … {layer}" for layer in STYLE_LAYERS[1:]]


def row_step(item):
    label, step = item
    offset = labels.index(label) * step.total
    return replace(step, step=offset + step.step, total=len(labels) * step.total)


def show_row(item, live):
    items = st.session_state["tex_result"]["items"]
    columns = st.columns(len(labels))
    for column, label in zip(columns, labels):
        if label in items:
            step = items[label][1]
            column.image(optimization.visible(step.pixels), caption=f"{label} · style loss {step.losses['style loss']:.3f}", width="stretch")
        else:
            column.caption(f"{label}: waiting")
    st.caption(f"Textures from the Gram matrices of more and more layers · {vgg.label}")


def row_steps(size: int, steps: int, lr: float):
    return lambda: texture_row(vgg, image_pixels(vgg, image, max(size, 128)), size=size, steps=steps, lr=lr,
                               every=max(1, steps // 10))


# the first view: a smaller, shorter row, 7 s here (the defaults take about a minute)
PREVIEW_SIZE, PREVIEW_STEPS, PREVIEW_LR = 64, 40, 0.05
preview = optimization.Preview({**params, "size": PREVIEW_SIZE, "steps": PREVIEW_STEPS, "lr": PREVIEW_LR},
                               row_steps(PREVIEW_SIZE, PREVIEW_STEPS, PREVIEW_LR),
                               f"at {PREVIEW_SIZE} px and {PREVIEW_STEPS} steps per texture")
run, _ = optimization.buttons("tex", "Synthesise the row")
state = optimization.stream("tex_result", params, row_steps(size, steps, lr), run, show_row, step_of=row_step,
                            first_view=True, preview=preview)
if state and state["last"] is not None and len(state["items"]) == len(labels):
    import torch

    row = torch.cat([state["items"][label][1].pixels for label in labels], dim=3)
    optimization.downloads("tex", "textures", state["params"], row, {"model": vgg.label, "layers": labels})
