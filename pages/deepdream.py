"""DeepDream: amplify what a layer already sees in the image (Mordvintsev, Olah & Tyka 2015)."""

import streamlit as st

import ui
from ui import optimization
from cnnviz import synthesis

st.title("DeepDream")
ui.explainer(
    "Pick a layer and ask the network to see *more* of whatever it already sees: change the pixels to raise "
    "½‖A‖², half the squared activations of that layer (Mordvintsev, Olah & Tyka, 2015, *Inceptionism: "
    "Going Deeper into Neural Networks*). Shallow layers amplify strokes and textures; deeper layers "
    "amplify parts and objects.\n\n"
    "Each step moves the pixels by the step size on average (the gradient divided by its mean absolute "
    "value), after a random **jitter** shift. **Octaves** run the same steps at several scales, from small "
    "to full size: the detail dreamt at one scale is enlarged and added at the next, so patterns of "
    "several sizes appear. See also Olah et al. (2017, *Feature Visualization*). With **random weights** "
    "the patterns come from the architecture alone."
)

ctx = ui.context()
model = ctx.model
spatial = list(ui.spatial_layers(ctx, containers=False))
small = model.input_size[1] < 64

c1, c2, c3 = st.columns(3)
default_layer = ui.teaching_layers(ctx)["dream"]  # a block output past mid-depth: parts, not batch-norm noise
layer = c1.selectbox("Layer", spatial, index=spatial.index(default_layer), key=f"dd_layer_{model.name}")
size = c2.slider("Output size (longer side, pixels)", 32, synthesis.MAX_DREAM_SIZE, 64 if small else 320, step=16, key="dd_size")
steps = c3.slider("Steps per octave", 1, 100, 10, key="dd_steps")
c1, c2, c3, c4, c5 = st.columns(5)
lr = c1.select_slider("Step size (pixel units)", [0.002, 0.005, 0.01, 0.02, 0.05], value=0.01, key="dd_lr")
octaves = c2.slider("Octaves", 1, synthesis.MAX_OCTAVES, 3, key="dd_octaves")
octave_scale = c3.slider("Octave scale", 1.1, 2.0, 1.4, step=0.1, key="dd_scale")
jitter = c4.slider("Jitter (pixels)", 0, 16, 4 if not small else 2, key="dd_jitter")
seed = c5.number_input("Seed", 0, 10_000, 0, key="dd_seed")

params = {
    "model": model.name, "weights": model.weights, "image": ctx.image_name, "layer": layer, "size": size,
    "steps": steps, "lr": lr, "octaves": octaves, "octave_scale": octave_scale, "jitter": jitter, "seed": int(seed),
}


def make_steps():
    start = synthesis.image_pixels(model, ctx.image, size)
    return synthesis.dream(
        model, start, layer, steps=steps, lr=lr, octaves=octaves, octave_scale=octave_scale,
        jitter_pixels=jitter, seed=int(seed), every=max(1, steps * octaves // 20),
    )


def show(step, live):
    left, right = st.columns([1, 1])
    octave = step.losses.get("octave", 1)
    left.image(optimization.visible(step.pixels), caption=f"{layer} · octave {octave:g} of {octaves} · step {step.step} · {model.label}", width="stretch")
    fig = optimization.loss_figure(step.history, {f"½‖A‖² of {layer}": f"{layer} ½‖A‖²"}, "Objective (the jumps are new octaves)")
    right.plotly_chart(fig, width="stretch", key=f"dd_curve_{step.step}" if live else "dd_curve")


run, _ = optimization.buttons("dd", "Dream")
state = optimization.stream("dd_result", params, make_steps, run, show, first_view=True)
if state and state["last"] is not None:
    last = state["last"]
    optimization.downloads("dd", "deepdream", state["params"], last.pixels, {
        "model": model.label, "stopped_at_step": last.step, "final_losses": last.losses})
