"""Feature inversion: which image has the same features as this one? (Mahendran & Vedaldi 2015)"""

from dataclasses import replace

import streamlit as st

import ui
from ui import optimization
from cnnviz import synthesis
from cnnviz.display import pixels_to_array, png_bytes, tile

st.title("Feature inversion")
ui.explainer(
    "Take the features Φ₀ that one layer computes for the current image, then start from noise and change "
    "the pixels until that layer computes the same features: minimise ‖Φ(x) − Φ₀‖² / ‖Φ₀‖² + λ·TV^β(x) "
    "(Mahendran & Vedaldi, 2015, *Understanding Deep Image Representations by Inverting Them*). The "
    "**total variation** TV^β penalises differences between neighbouring pixels, so among all images with "
    "those features the smooth ones win.\n\n"
    "What survives in the reconstruction is what the layer keeps; what comes back wrong was thrown away. "
    "Early layers keep almost everything; deeper layers keep *what* is there more than *where* and *which "
    "colour*. The **row** runs the inversion for several depths side by side. The curve shows the relative "
    "feature error falling. With **random weights** deep layers still keep a surprising amount: the "
    "architecture alone constrains the image."
)

ctx = ui.context()
model = ctx.model
spatial = list(ui.spatial_layers(ctx, containers=False))
small = model.input_size[1] < 64

c1, c2, c3, c4, c5 = st.columns(5)
steps = c1.slider("Steps", 10, synthesis.MAX_STEPS, 100 if small else 150, step=10, key="inv_steps")
lr = c2.select_slider("Step size (Adam, pixel units)", [0.005, 0.01, 0.02, 0.05, 0.1], value=0.05, key="inv_lr")
tv_weight = c3.select_slider("TV weight λ", [0.0, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0], value=0.1, key="inv_tv")
tv_beta = c4.slider("TV exponent β", 1.0, 3.0, 2.0, step=0.5, key="inv_beta")
seed = c5.number_input("Seed", 0, 10_000, 0, key="inv_seed")
common = {"steps": steps, "lr": lr, "tv_weight": tv_weight, "tv_beta": tv_beta, "seed": int(seed)}
meta = {"model": model.name, "weights": model.weights, "image": ctx.image_name}

st.columns([1, 3])[0].image(optimization.visible(model.preprocessing.denormalize(ctx.x)), caption=f"{ctx.image_name}, as the model sees it", width="stretch")

st.subheader("One layer")
teaching = ui.teaching_layers(ctx)  # block outputs: mid-depth for one, first to last block for the row
layer = st.selectbox("Layer to invert", spatial, index=spatial.index(teaching["inversion"]), key=f"inv_layer_{model.name}")
params = {**meta, "layer": layer, **common}


def show_one(step, live):
    left, right = st.columns([1, 2])
    left.image(optimization.visible(step.pixels), caption=f"reconstruction from {layer} · step {step.step} · {model.label}", width="stretch")
    fig = optimization.loss_figure(step.history, {"relative feature error": "feature error", f"TV^{tv_beta:g}": f"TV^{tv_beta:g}"}, "Loss curve")
    right.plotly_chart(fig, width="stretch", key=f"inv_curve_{step.step}" if live else "inv_curve")


run, _ = optimization.buttons("inv", "Invert")
state = optimization.stream(
    "inv_result", params, lambda: synthesis.invert_features(model, ctx.x, layer, every=max(1, steps // 20), **common), run, show_one, first_view=True
)
if state and state["last"] is not None:
    last = state["last"]
    optimization.downloads("inv", "inversion", state["params"], last.pixels, {
        "model": model.label, "stopped_at_step": last.step, "final_losses": last.losses})

st.subheader("A row of depths")
row_options = spatial + [name for name in teaching["inversion_row"] if name not in spatial]  # and the class scores
row_layers = st.multiselect("Layers, shallow to deep", row_options, default=teaching["inversion_row"], key=f"inv_row_{model.name}", max_selections=6)
row_layers = [name for name in row_options if name in row_layers]  # keep depth order
row_params = {**meta, "layers": row_layers, **common}


def row_step(item):
    name, step = item
    offset = row_layers.index(name) * steps if name in row_layers else 0
    return replace(step, step=offset + step.step, total=len(row_layers) * steps)


def show_row(item, live):
    items = st.session_state["inv_row_result"]["items"]
    columns = st.columns(max(1, len(items)))
    for column, (name, (_, step)) in zip(columns, items.items()):
        column.image(optimization.visible(step.pixels), caption=f"{name} · error {step.losses['feature error']:.3g}", width="stretch")
    st.caption(f"Reconstructions from shallow to deep · {model.label}")


run_row, _ = optimization.buttons("inv_row", "Invert the row")
row_state = optimization.stream(
    "inv_row_result", row_params,
    lambda: synthesis.invert_layers(model, ctx.x, row_layers, every=max(1, steps // 10), **common),
    run_row, show_row, step_of=row_step,  # no first view: four inversions take too long for one
)
if row_state and row_state["items"]:
    row_items = row_state["items"]
    strip = tile([pixels_to_array(step.pixels) for _, step in row_items.values()], columns=len(row_items), pad=4)
    optimization.download_pair("inv_row", "inversion_row", row_state["params"], png_bytes(strip), {
        "model": model.label, "status": row_state["status"],
        "feature_error": {name: step.losses["feature error"] for name, (_, step) in row_items.items()}},
        label="Download the row (PNG)")
