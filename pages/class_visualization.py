"""Class and neuron visualization by gradient ascent on the image (Simonyan et al. 2014; Yosinski et al. 2015)."""

import streamlit as st

import ui
from ui import optimization
from cnnviz import synthesis
from cnnviz.models import predict

st.title("Class & neuron visualization")
ui.explainer(
    "Start from a flat image (or noise, or the current photo) and change its pixels, step by step, in the "
    "direction that raises one number of the network: the score of a **class** before the softmax, "
    "S_c(I), or the mean activation of one **channel** (or one unit) of an inner layer. The image the "
    "network 'wants' appears.\n\n"
    "Plain gradient ascent on argmax_I S_c(I) − λ‖I‖² (Simonyan, Vedaldi & Zisserman, 2014, *Deep Inside "
    "Convolutional Networks*) gives high-frequency noise that fools the network. Yosinski et al. (2015, "
    "*Understanding Neural Networks Through Deep Visualization*) added regularizers that you can switch "
    "on one by one: **Gaussian blur** every few steps (removes high frequencies), **clip pixels with small "
    "norm** and **clip pixels with small contribution** (value × gradient) to the mean colour, and random "
    "**jitter** (shifts) so the pattern must work wherever it lies. See Olah et al. (2017, *Feature "
    "Visualization*, Distill) for a tour. Each step moves the pixels by the step size on average "
    "(normalised gradient); pixels stay in the valid range. With **random weights** the result shows the "
    "architecture's bias, not learned features."
)

ctx = ui.context()
model = ctx.model
spatial = ui.spatial_layers(ctx, containers=False)
small = model.input_size[1] < 64

modes = ["A class", "A channel or unit of a layer"] if model.classifies else ["A channel or unit of a layer"]
mode = st.radio("Maximise", modes, horizontal=True, key="cv_mode")
if not model.classifies:
    st.caption(f"{model.name} has no classifier, so only channels and units can be maximised here; pick "
               "squeezenet1_1 or efficientnet_lite0 for classes.")
c1, c2, c3 = st.columns(3)
if mode == "A class":
    predicted = model.class_names.index(predict(model, ctx.x, 1)[0][0][0])
    target = c1.selectbox(
        "Class", range(len(model.class_names)), index=predicted, key=f"cv_class_{model.name}",
        format_func=ui.labels({i: f"{i}: {name}" for i, name in enumerate(model.class_names)}),
    )
    what = {"class": model.class_names[target]}
else:
    names = list(spatial)
    default_layer = ui.teaching_layers(ctx)["feature"]  # a mid-depth block output: parts and textures
    layer = c1.selectbox("Layer", names, index=names.index(default_layer), key=f"cv_layer_{model.name}")
    strongest = ui.strongest_channel(ctx, layer)  # the channel the current image drives hardest, not channel 0
    index = c2.number_input(f"Channel (0 to {spatial[layer] - 1})", 0, spatial[layer] - 1, strongest,
                            key=f"cv_channel_{model.name}_{layer}_{ctx.image_key}")
    one_unit = c3.checkbox("Only the centre unit", key="cv_unit", help="Maximise one position instead of the channel's mean.")
    what = {"layer": layer, "channel": int(index), "unit": "centre" if one_unit else "mean"}

# The page opens on the recommended preset: blur + jitter + small-norm clipping (Yosinski et al. 2015) gives a
# recognisable class on the trained SqueezeNet in 100 steps; "bare" switches them all off, one click away.
RECOMMENDED = {"cv_l2": 0.0, "cv_blur_every": 2, "cv_blur_sigma": 1.0, "cv_clip_norm": 30, "cv_clip_contribution": 0,
               "cv_jitter": 2 if small else 8}
BARE = {"cv_l2": 0.0, "cv_blur_every": 0, "cv_blur_sigma": 0.5, "cv_clip_norm": 0, "cv_clip_contribution": 0, "cv_jitter": 0}
for name, value in RECOMMENDED.items():
    st.session_state.setdefault(name, value)  # the widgets below take no default: the state holds it


st.subheader("Optimisation")
c1, c2, c3, c4, c5 = st.columns(5)
steps = c1.slider("Steps", 5, synthesis.MAX_STEPS, 60 if small else 100, step=5, key="cv_steps")
lr = c2.select_slider("Step size (pixel units)", [0.005, 0.01, 0.02, 0.05, 0.1, 0.2], value=0.05, key="cv_lr")
l2_weight = c3.select_slider("L2 weight λ", [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], key="cv_l2")
seed = c5.number_input("Seed", 0, 10_000, 0, key="cv_seed")
init = c4.radio("Start from", synthesis.INITS, key="cv_init", format_func={"zeros": "zeros (mean colour)", "noise": "noise", "image": "current image"}.get)

st.subheader("Regularizers (Yosinski et al. 2015)")
presets = st.container(horizontal=True)  # full labels, wrapping when the row is narrow
presets.button("Recommended regularizers", on_click=ui.set_state, args=(RECOMMENDED,), key="cv_preset_recommended",
          icon=":material/auto_fix_high:", help="Blur every 2 steps (σ 1), jitter, clip the 30 % smallest-norm pixels.")
presets.button("Bare gradient ascent", on_click=ui.set_state, args=(BARE,), key="cv_preset_bare", icon=":material/blur_off:",
          help="No regularizer at all: see why they matter.")
c1, c2, c3, c4, c5 = st.columns(5)
blur_every = c1.slider("Blur every k steps (0: off)", 0, 20, key="cv_blur_every")
blur_sigma = c2.slider("Blur σ (pixels)", 0.1, 2.0, step=0.1, key="cv_blur_sigma")
clip_norm = c3.slider("Clip small norm: percentile", 0, 90, step=5, key="cv_clip_norm")
clip_contribution = c4.slider("Clip small contribution: percentile", 0, 90, step=5, key="cv_clip_contribution")
jitter = c5.slider("Jitter (pixels)", 0, 8, key="cv_jitter")

params = {
    "model": model.name, "weights": model.weights, **what, "steps": steps, "lr": lr, "l2_weight": l2_weight,
    "blur_every_steps": blur_every, "blur_sigma": blur_sigma, "clip_norm_percentile": clip_norm,
    "clip_contribution_percentile": clip_contribution, "jitter_pixels": jitter, "init": init, "seed": int(seed),
}
loop_params = dict(
    steps=steps, lr=lr, l2_weight=l2_weight, blur_every_steps=blur_every, blur_sigma=blur_sigma,
    clip_norm_percentile=clip_norm, clip_contribution_percentile=clip_contribution, jitter_pixels=jitter,
    init=init, image=ctx.x, seed=int(seed), every=max(1, steps // 20),
)


def make_steps():
    if "class" in what:
        return synthesis.class_visualization(model, target, **loop_params)
    position = "centre" if what["unit"] == "centre" else None
    return synthesis.neuron_visualization(model, what["layer"], what["channel"], position, **loop_params)


title = f"class {what['class']}" if "class" in what else f"{what['layer']} channel {what['channel']}" + (
    " (centre unit)" if what.get("unit") == "centre" else "")


def show(step, live):
    left, right = st.columns([1, 2])
    left.image(optimization.visible(step.pixels), caption=f"{title} · step {step.step} · {model.label}", width="stretch")
    term = next(k for k in step.losses if k != "objective") if len(step.losses) > 1 else "objective"
    fig = optimization.loss_figure(step.history, {"objective (maximised)": "objective", title: term, "‖I‖²": "‖I‖²"}, "Loss curve")
    right.plotly_chart(fig, width="stretch", key=f"cv_curve_{step.step}" if live else "cv_curve")


run, _ = optimization.buttons("cv", "Generate")
state = optimization.stream("cv_result", params, make_steps, run, show, first_view=True)
if state and state["last"] is not None:
    last = state["last"]
    optimization.downloads("cv", "classviz", params, last.pixels, {
        "model": model.label, "stopped_at_step": last.step, "final_losses": last.losses, "status": state["status"]})
