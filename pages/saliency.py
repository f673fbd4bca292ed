"""Saliency: which pixels matter for a class. Several attribution methods side by side, a compare
mode (one method, two models), the randomisation sanity check, and guided backprop of one channel."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw

import ui
from ui import optimization
from cnnviz import attribution as A
from cnnviz import display
from cnnviz.models import MODEL_NAMES, pretrained_available

st.title("Saliency: which pixels matter")
ui.explainer(
    "Each method answers *which pixels of this image made the model score the chosen class?* in its own way. "
    "Bright (or red) = important. Every map is computed for the **target class** you pick below.\n\n"
    "- **Vanilla gradient** (Simonyan et al., 2014): how much the class score changes when one pixel changes a "
    "little (the gradient of the score with respect to the input), shown as its absolute value, max over colour "
    "channels.\n"
    "- **Guided backprop** (Springenberg et al., 2015): the same backward pass, but every ReLU lets only "
    "positive gradients through, and only where it was active. Sharper, but Adebayo et al. showed it barely "
    "depends on the weights (try the sanity check). cnnviz also guides ReLUs applied as functions in "
    "`forward` (GoogLeNet, DenseNet), where Captum guides only `nn.ReLU` modules.\n"
    "- **Grad-CAM** (Selvaraju et al., 2017): weights the feature maps of one layer by how much the class score "
    "depends on them on average, keeps the positive part and upsamples it: coarse but class-specific.\n"
    "- **Occlusion** (Zeiler & Fergus, 2014): slides a grey square (the mean image, 0 after normalisation) over "
    "the image and records how much the class score drops. Red: hiding it lowers the score; blue: raises it. "
    "The slowest method: one forward pass per window position. cnnviz caches the clean image's activations and "
    "recomputes, layer by layer, only the part a window can change (Krypton, Nakandala et al., 2019); by default "
    "the last layers, where a window changes everything, are replaced by their first-order expansion where a "
    "sample of windows shows that stays within 10 %. *Fast preview* allows 30 %, *exact* recomputes all.\n"
    "- **SmoothGrad** (Smilkov et al., 2017): the vanilla gradient averaged over noisy copies of the image, "
    "which removes much of its speckle.\n"
    "- **Integrated gradients** (Sundararajan et al., 2017): the gradient averaged along a straight path from a "
    "black image to this one, times the pixel difference. Its attributions add up to the score difference "
    "between the image and the black image (*completeness*); the caption shows both numbers.\n\n"
    "**Sanity check** (Adebayo et al., 2018): a map that explains *the model* must change when the model's "
    "weights are replaced by random ones, layer by layer from the top. The check shows the maps after each "
    "stage and their Spearman rank correlation ρ with the original map (1 = same ranking of pixels).\n\n"
    "With **random weights** the maps show what the architecture alone does, not what a trained model learned."
)

ctx = ui.context()
ui.require_classes(ctx, "class scores to explain")
model = ctx.model
view = model.preprocessing.view(ctx.image).convert("RGB")
_, height, width = model.input_size
SIGNED = {"occlusion"}


def colour_bar(heat: np.ndarray, signed: bool) -> go.Figure:
    """A short horizontal colour bar of the map's values, as wide as its column."""
    if signed:
        top = float(np.percentile(np.abs(heat), 99.0)) or 1.0
        low, high, scale = -top, top, ui.colormap("RdBu_r")
    else:
        low, high, scale = float(heat.min()), float(np.percentile(heat, 99.0)), ui.colormap("Inferno")
        high = high if high > low else low + 1.0
    fig = go.Figure(go.Scatter(
        x=[None], y=[None], mode="markers", hoverinfo="skip", showlegend=False,
        marker=dict(colorscale=scale, cmin=low, cmax=high, color=[low], showscale=True,
                    colorbar=dict(title=dict(text="attribution", side="top"), orientation="h", thickness=10, len=1.0,
                                  x=0.5, xanchor="center", y=1.0, yanchor="top", nticks=4,
                                  exponentformat="e" if max(abs(low), abs(high)) < 1e-2 else "none")),
    ))
    fig.update_layout(height=70, margin=dict(l=8, r=8, t=0, b=0))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def show_overlay(image: Image.Image, heat: np.ndarray, signed: bool, title: str, key: str) -> Image.Image:
    """The map blended over the image, as wide as its column (an image, not a plot, so a narrow column
    does not squeeze it beside its colour bar), with the colour bar under it. Returns the blend."""
    blended = display.heat_overlay(image, heat, signed=signed, name=ui.colormap("RdBu_r" if signed else "Inferno"))
    st.markdown(f"**{title}**")
    st.image(display.upscale(np.asarray(blended), 256), width="stretch")
    st.plotly_chart(colour_bar(heat, signed), width="stretch", key=key, config={"displayModeBar": False})
    return blended


def labelled(image: Image.Image, text: str, size: int = 224) -> np.ndarray:
    """An overlay scaled to ``size`` with a caption strip under it, for the PNG download."""
    scaled = image.resize((size, size), Image.Resampling.NEAREST if image.width < size // 2 else Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size + 30), "white")
    canvas.paste(scaled, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate([text[:36], text[36:72]]):
        draw.text((4, size + 2 + row * 13), line, fill="black")
    return np.asarray(canvas)


# ---------------------------------------------------------------- parameters
classes = list(range(len(model.class_names)))
predicted = A.top_class(model.module, ctx.x)
spatial_rows = list(ui.spatial_layers(ctx))
default_layer = A.default_cam_layer(model.module, ctx.x)
big = height >= 128

compare = st.toggle("Compare mode: one method on two models", key="saliency_compare")
c1, c2, c3 = st.columns([3, 2, 2])
if compare:  # one method on two models: the list of methods does not apply, so it is not shown
    compare_method = c1.selectbox("Method", list(A.METHODS), key="saliency_compare_method")
    methods = []
else:
    methods = c1.multiselect("Methods", list(A.METHODS), default=["vanilla gradient", "guided backprop", "Grad-CAM", "occlusion"],
                             key="saliency_methods")
target = c2.selectbox("Target class", classes, index=predicted, key=f"saliency_target_{ctx.model_key}",
                      format_func=ui.labels({i: f"{model.class_names[i]}{' (top prediction)' if i == predicted else ''}"
                                             for i in classes}),
                      help="Default: the model's top prediction. Type to search any class by name.")
layer = c3.selectbox("Grad-CAM layer", spatial_rows or [default_layer],
                     index=(spatial_rows.index(default_layer) if default_layer in spatial_rows else 0),
                     key=f"saliency_layer_{ctx.model_key}", help="Default: the last layer with a spatial output.")
with st.expander("Method settings", expanded=False):
    s1, s2, s3, s4, s5 = st.columns(5)
    window = s1.slider("Occlusion window (px)", 2, height // 2, 32 if big else 8, key=f"saliency_window_{height}")
    stride = s2.slider("Occlusion stride (px)", 1, height // 2, 16 if big else 4, key=f"saliency_stride_{height}")
    samples = s3.slider("SmoothGrad samples", 1, 100, 25, key="saliency_samples")
    noise = s4.slider("SmoothGrad noise (fraction of range)", 0.0, 0.5, 0.15, 0.01, key="saliency_noise")
    steps = s5.slider("Integrated-gradients steps", 4, 200, 50, key="saliency_steps")
    occlusion_mode = st.radio("Occlusion", list(A.OCCLUSION_MODES), horizontal=True, key="saliency_occlusion_mode",
                              captions=[caption for _, caption in A.OCCLUSION_MODES.values()])
params = {"layer": layer, "window": window, "stride": stride, "samples": samples, "noise": noise, "seed": 0, "steps": steps,
          "occlusion mode": occlusion_mode, **A.OCCLUSION_MODES[occlusion_mode][0]}
relevant = {
    "Grad-CAM": ("layer",), "occlusion": ("window", "stride", "occlusion mode"), "SmoothGrad": ("samples", "noise", "seed"),
    "integrated gradients": ("steps",),
}
target_name = model.class_names[target]


HEAVY_METHODS = ("occlusion", "SmoothGrad", "integrated gradients")  # many passes: through the admission gate


def run_method(loaded, x, model_key: str, method: str, class_index: int, method_params: dict) -> A.Attribution:
    key_params = tuple((k, method_params[k]) for k in relevant.get(method, ()))
    key = (model_key, ctx.image_key, method, class_index, key_params)
    return ui.cached(
        key,
        lambda progress: ui.run_or_explain(A.attribute, method, loaded.module, x, class_index, method_params, progress),
        f"{method} on {loaded.name}…",
        heavy=method in HEAVY_METHODS,
    )


def method_note(result: A.Attribution, loaded) -> str:
    note = result.note
    if result.method == "guided backprop":
        x = ctx.x if loaded is model else loaded.preprocessing(ctx.image)
        total, by_modules = ui.cached(("relus", loaded.label, loaded.name), lambda _: A.count_relus(loaded.module, x),
                                          "Counting ReLUs…", heavy=False)
        if total > by_modules:
            note = f"also guided {total - by_modules} functional ReLU calls (Captum would not)"
    return note


# ---------------------------------------------------------------- grid of methods
if not compare:
    if not methods:
        st.info("Pick at least one method.")
    else:
        st.subheader(f"Why “{target_name}”? · {model.label}")
        columns = st.columns(min(3, len(methods)))
        tiles, seconds = [], []
        for i, method in enumerate(methods):
            result = run_method(model, ctx.x, ctx.model_key, method, target, params)
            heat = result.heat[0].cpu().numpy()
            note = method_note(result, model)
            with columns[i % len(columns)]:
                blended = show_overlay(view, heat, method in SIGNED, method, f"saliency_fig_{method}")
                st.caption(f"{result.seconds * 1000:.0f} ms · {model.label} · target {target_name}" + (f" · {note}" if note else ""))
            tiles.append(labelled(blended, f"{method} ({result.seconds * 1000:.0f} ms)"))
            seconds.append(round(result.seconds, 4))
        grid = display.tile(tiles, columns=min(3, len(tiles)), pad=4)
        optimization.download_pair("saliency", "saliency", {
            "model": model.name, "weights": model.weights, "image": ctx.image_name, "target": target_name,
            "methods": methods, **{k: params[k] for method in methods for k in relevant.get(method, ())}},
            display.png_bytes(grid), {"model": model.label, "seconds": dict(zip(methods, seconds))},
            label="Download the grid (PNG)")

# ---------------------------------------------------------------- compare mode
else:
    c2, c3 = st.columns(2)
    method = compare_method
    classifiers = [n for n in MODEL_NAMES if n != "vgg16_features"]  # the others have class scores
    default_other = next(n for n in ("squeezenet1_1", "efficientnet_lite0", "resnet18") if n != model.name)
    other_name = c2.selectbox("Second model", classifiers, index=classifiers.index(default_other), key="saliency_compare_model")
    weight_options = (["pretrained"] if pretrained_available(other_name) else []) + ["random"]
    other_weights = c3.radio("Its weights", weight_options, horizontal=True, key=f"saliency_compare_weights_{other_name}")
    other = ui.run_or_explain(ui.cached_model, other_name, other_weights)
    other_key = f"{other_name}|{other_weights}|"
    other_x = other.preprocessing(ctx.image)
    other_target = target if other.class_names == model.class_names else A.top_class(other.module, other_x)
    left, right = st.columns(2)
    for column, loaded, x, key, class_index in ((left, model, ctx.x, ctx.model_key, target),
                                                (right, other, other_x, other_key, other_target)):
        method_params = dict(params)
        if method == "Grad-CAM" and loaded is not model:
            method_params["layer"] = A.default_cam_layer(loaded.module, x)
        if loaded is not model and loaded.input_size[1] != height:
            c = loaded.input_size[1] // 7 if loaded.input_size[1] >= 128 else 8
            method_params.update(window=max(2, c), stride=max(1, c // 2))
        result = run_method(loaded, x, key, method, class_index, method_params)
        with column:
            show_overlay(loaded.preprocessing.view(ctx.image).convert("RGB"), result.heat[0].cpu().numpy(),
                         method in SIGNED, method, f"saliency_compare_fig_{key}")
            note = method_note(result, loaded)
            st.caption(f"{result.seconds * 1000:.0f} ms · {loaded.label} · target {loaded.class_names[class_index]}" + (f" · {note}" if note else ""))

# ---------------------------------------------------------------- sanity check
st.subheader("Sanity check: randomise the weights")
s1, s2 = st.columns([2, 1])
sanity_method = s1.selectbox("Method to check", list(A.METHODS), key="saliency_sanity_method",
                             index=list(A.METHODS).index("guided backprop"))
stages = s2.slider("Stages", 2, 6, 4, key="saliency_sanity_stages")
if st.button("Run the sanity check (Adebayo et al., 2018)", key="saliency_sanity_run"):
    sanity_params = {**params, "samples": min(samples, 10), "steps": min(steps, 20)}
    st.session_state["_saliency_sanity"] = (
        ctx.model_key, ctx.image_key, sanity_method, target,
        ui.cached(
            ("sanity", ctx.model_key, ctx.image_key, sanity_method, target, stages, tuple(sorted(sanity_params.items()))),
            lambda progress: ui.run_or_explain(A.randomization_sanity_check, model.module, ctx.x, target, sanity_method,
                                               sanity_params, stages, 0, progress),
            "Randomising a private copy of the model, layer by layer…",
        ),
    )
sanity = st.session_state.get("_saliency_sanity")
if sanity and sanity[:2] == (ctx.model_key, ctx.image_key):
    _, _, checked_method, checked_target, results = sanity
    columns = st.columns(len(results))
    for column, stage in zip(columns, results):
        with column:
            st.image(display.heat_overlay(view, stage.heat[0].cpu().numpy(), signed=checked_method in SIGNED), width="stretch")
            st.caption(f"**{stage.label}** · ρ = {stage.correlation:.2f}")
    st.caption(f"{checked_method} for “{model.class_names[checked_target]}” on {model.label}; randomised: a private copy, "
               "the shared model is untouched. ρ: Spearman rank correlation with the original map. A method that "
               "explains the model should fall to ρ ≈ 0.")

# ---------------------------------------------------------------- intermediate features
st.subheader("Intermediate features via guided backprop")
st.caption("Which pixels make one channel of an inner layer fire: guided backprop of that channel's strongest activation "
           "(Springenberg et al., 2015).")
f1, f2 = st.columns([2, 1])
feature_default = ui.teaching_layers(ctx)["feature"]  # a mid-depth block output, not a batch norm or shortcut
feature_options = spatial_rows or [feature_default]
feature_layer = f1.selectbox("Layer", feature_options, key=f"saliency_feature_layer_{ctx.model_key}",
                             index=feature_options.index(feature_default) if feature_default in feature_options else 0)
channels = ui.spatial_layers(ctx).get(feature_layer, 1)
strongest = ui.strongest_channel(ctx, feature_layer)  # the channel that fires most on this image, not channel 0
channel = int(f2.number_input("Channel", 0, max(0, channels - 1), strongest,
                              key=f"saliency_feature_channel_{ctx.model_key}_{feature_layer}_{ctx.image_key}",
                              help=f"Default: channel {strongest}, the one that responds most to this image."))
gradient = ui.cached(
    ("channel", ctx.model_key, ctx.image_key, feature_layer, channel),
    lambda progress: ui.run_or_explain(A.guided_backprop_channel, model.module, ctx.x, feature_layer, channel),
    "Guided backprop of the channel…",
    heavy=False,
)
g1, g2, g3 = st.columns(3)
pattern_image = display.signed_image(gradient[0], 99.5)
g1.image(pattern_image.resize((256, 256), Image.Resampling.NEAREST), caption="guided gradient (grey = 0)", width="stretch")
g2.image(display.heat_overlay(view, A.to_heat(gradient)[0].cpu().numpy()).resize((256, 256)), width="stretch",
         caption="|guided gradient| over the image")
g3.caption(f"{model.label} · {feature_layer}, channel {channel} of {channels}")
g3.caption("The patches page shows a channel's maximally activating patches over a dataset, each with the guided "
           "backprop of its strongest unit beside it, cropped to the same receptive field (pick the same layer and "
           "channel there).")
g3.page_link("pages/patches.py", label="Open the patches page", icon=":material/extension:")
