"""The smallest change that fools the network (DeepFool) and one universal perturbation that fools it on
most images (Moosavi-Dezfooli et al., CVPR 2016 and CVPR 2017)."""

import hashlib
import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots
import streamlit as st
import torch
from safetensors.torch import save as safetensors_bytes

import ui
from ui import datasets, optimization
from cnnviz import adversarial, universal
from cnnviz.data import ImageDataset
from cnnviz.deepfool import deepfool
from cnnviz.display import pixels_to_array, png_bytes
from cnnviz.models import MODEL_NAMES, SMALL_CNN, predict, pretrained_available

st.title("Smallest and universal perturbations")
ui.explainer(
    "**How small can a fooling change be?** DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016, "
    "*DeepFool: a simple and accurate method to fool deep neural networks*) pretends the network is linear "
    "around the image: the border between the current class and each other class is then a flat plane, and "
    "the nearest plane is a known distance away. It steps exactly onto that plane, looks again, and repeats "
    "until the label changes (usually 2 or 3 steps), then goes 2 % further (the *overshoot*). The result is "
    "about the smallest change, in L2 norm, that flips the label. FGSM and PGD (the Adversarial examples "
    "page) change every pixel by up to ε; here each is run at the smallest ε that flips the label (found by "
    "bisection over pixel levels), and their L2 norms are set beside DeepFool's.\n\n"
    "**Can one small pattern fool it on most images?** Yes: a *universal* perturbation (Moosavi-Dezfooli, "
    "Fawzi, Fawzi & Frossard, CVPR 2017, *Universal adversarial perturbations*) is one image v, the same "
    "for every photo. Their Algorithm 1 passes over a set of images; where the current v does not yet fool "
    "an image, it adds that image's DeepFool step to v and shrinks v back into a ball of radius ξ (ℓ∞: no "
    "pixel moves by more than ξ levels; ℓ2: the total length is at most ξ). It stops when the *fooling "
    "rate* (the share of images whose top-1 label changes) reaches the target. Then v is tried on held-out "
    "images it never saw, beside random noise of the same size (which fools far fewer), and on a second "
    "network (*transfer*).\n\n"
    "All images live in pixel values 0 to 1; the image plus the perturbation is clipped to that range "
    "before the network sees it. Perturbations are shown amplified: gray is no change, and the stated "
    "factor makes the largest change black or white."
)

ctx = ui.context()
ui.require_classes(ctx, "class scores to fool")
model = ctx.model
small = model.input_size[0] == 1
pre = model.preprocessing

# --- DeepFool on the current image ----------------------------------------------------------

st.header("The smallest change that fools it")
c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1, 1.5])
n_classes = len(model.class_names)
df_norm = c1.radio("Smallest in", ["L2", "ℓ∞"], horizontal=True, key="df_norm",
                   help="L2: the DeepFool of the paper. ℓ∞: its variant (section 3.3) that keeps the largest pixel change small.")
overshoot = c2.slider("Overshoot", 0.0, 0.2, 0.02, 0.01, key="df_overshoot")
classes = c3.slider("Candidate classes", 2, min(20, n_classes), min(10, n_classes), key="df_classes")
max_iter = c4.slider("Most DeepFool steps", 1, 200, 50, key="df_iter")
compare = c5.checkbox("Compare with FGSM, PGD", value=True, key="df_compare",
                      help="Also find, by bisection, the smallest ε at which FGSM and PGD change the prediction, "
                           "and compare the sizes of their changes with DeepFool's.")
df_params = {
    "model": ctx.model_key, "image": ctx.image_key, "norm": df_norm, "overshoot": overshoot, "classes": classes,
    "max_iter": max_iter, "compare": compare,
}


def smallest_changes(progress) -> dict:
    progress(0.0, "DeepFool")
    found = deepfool(model, ctx.x, classes=classes, overshoot=overshoot, max_iter=max_iter, p=2 if df_norm == "L2" else math.inf)
    out = {"deepfool": found, "before": predict(model, ctx.x)[0], "after": predict(model, pre.normalize(found.adversarial))[0]}
    if compare:
        for i, method in enumerate(("FGSM", "PGD")):
            progress(0.1 + 0.45 * i, f"bisection over ε for {method}")
            out[method] = adversarial.smallest_epsilon(model, ctx.x, method)
    return out


def norms_figure(found: dict) -> go.Figure:
    """Two panels of bars: the L2 norm and the largest pixel change of DeepFool's, FGSM's and PGD's changes."""
    rows = [(f"DeepFool ({df_norm})", found["deepfool"].perturbation)]
    for method in ("FGSM", "PGD"):
        levels, attack = found[method]
        rows.append((f"{method}, ε = {levels}/255" if levels else f"{method}: none ≤ {adversarial.MAX_EPSILON_LEVELS}/255",
                     attack.perturbation if levels else None))
    fig = make_subplots(rows=1, cols=2, subplot_titles=["L2 norm", "max change (of 255)"],
                        shared_yaxes=True, horizontal_spacing=0.08)
    names = [name for name, _ in rows]
    for col, size in ((1, lambda d: float(d.flatten().norm())), (2, lambda d: float(d.abs().max()) * 255)):
        values = [size(d) if d is not None else 0.0 for _, d in rows]
        texts = [f"{v:.3g}" if d is not None else "—" for v, (_, d) in zip(values, rows)]
        fig.add_trace(go.Bar(x=values, y=names, orientation="h", text=texts, textposition="auto"), row=1, col=col)
    fig.update_layout(title="Smallest fooling change", showlegend=False, height=280,
                      yaxis={"autorange": "reversed"}, margin=dict(l=10, r=10, t=70, b=10))
    return fig


if st.button("Find the smallest change", key="df_run", type="primary", icon=":material/compress:"):
    st.session_state["df_params"] = df_params
if st.session_state.get("df_params") == df_params:
    found = ui.run_or_explain(ui.cached, ("deepfool", *df_params.items()), smallest_changes, "Smallest perturbations")
    result = found["deepfool"]
    amplified, scale = result.amplified_perturbation()
    c1, c2, c3 = st.columns(3)
    c1.image(optimization.visible(result.original), caption=f"original · {model.label}", width="stretch")
    c2.image(optimization.visible(amplified), caption=f"DeepFool's perturbation × {scale:,.0f} (gray = 0)", width="stretch")
    c3.image(optimization.visible(result.adversarial), caption="original + perturbation (clipped to 0…1)", width="stretch")
    before, after = found["before"][0], found["after"][0]
    norm_text = (f"L2 norm {float(result.norm[0]):.3g} ({float(result.relative_norm[0]) * 100:.2g} % of the image's), "
                 f"largest pixel change {float(result.perturbation.abs().max()) * 255:.0f} of 255 levels, "
                 f"{int(result.iterations[0])} DeepFool steps")
    if bool(result.fooled[0]):
        st.success(f"'{before[0]}' ({before[1]:.1%}) → '{after[0]}' ({after[1]:.1%}) with {norm_text}.")
    else:
        st.warning(f"DeepFool did not change the label within {max_iter} steps ({norm_text}). Allow more steps.")
    ui.export.offer("df", "deepfool", df_params, image=result.adversarial, label="Download PNG (original + perturbation)",
                    extra={"model_label": model.label, "before": before, "after": after, "fooled": bool(result.fooled[0]),
                           "l2_norm": float(result.norm[0]), "steps": int(result.iterations[0])})
    if not model.pretrained:
        st.caption("Random weights: the predictions are not meaningful, but the method works the same way.")
    c1, c2, c3 = st.columns(3)
    with c1:
        optimization.top5_chart(found["before"], "Original: top-5", "df_before")
    with c2:
        optimization.top5_chart(found["after"], "After DeepFool: top-5", "df_after")
    with c3:
        if compare:
            st.plotly_chart(norms_figure(found), width="stretch", key="df_norms")
            st.caption("FGSM and PGD (20 steps) at the smallest whole ε that flips the label, found by bisection; "
                       "their images are rounded to 8-bit levels, DeepFool's is not.")

# --- one universal perturbation -------------------------------------------------------------

st.header("One perturbation that fools it on most images")
compute_on, held_out, data_key = datasets.choose_split(model.name, "uap")
c1, c2, c3, c4, c5 = st.columns(5)
norm = c1.radio("Norm", ["ℓ∞", "ℓ2"], horizontal=True, key="uap_norm")
if norm == "ℓ∞":
    levels = c2.slider("ξ (pixel levels of 255)", 1, 128, 80 if small else 10, key="uap_xi")
    xi, p, xi_text = levels / 255, math.inf, f"{levels}/255"
else:
    xi = c2.slider("ξ (L2 norm, pixels in 0…1)", 0.5, 40.0, 4.0 if small else 8.0, 0.5, key="uap_xi2")
    p, xi_text = 2.0, f"{xi:g}"
target = c3.slider("Target fooling rate", 0.1, 1.0, 0.8, 0.05, key="uap_target")
passes = c4.slider("Most passes", 1, 10, 3, key="uap_passes")
seed = c5.number_input("Seed", 0, 10_000, 0, key="uap_seed")
uap_params = {
    "model": model.name, "weights": model.weights, "data": data_key, "norm": norm, "xi": xi_text,
    "target": target, "passes": passes, "seed": int(seed),
}


def pixels_of(dataset: ImageDataset, which: str):
    key = ("uap_pixels", ctx.model_key, data_key, which)
    return ui.cached(key, lambda progress: universal.dataset_pixels(model, dataset), f"Preparing the {which} images")


train_pixels = ui.run_or_explain(pixels_of, compute_on, "training")


def make_steps():
    every = max(1, len(train_pixels) // 20)
    return universal.universal_steps(model, train_pixels, xi, p, target, passes, int(seed), every=every)


def rate_figure(rates: tuple[float, ...], title: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(range(1, len(rates) + 1)), y=rates, mode="lines+markers", name="fooling rate"))
    fig.add_hline(y=target, line_dash="dash", annotation_text="target")
    fig.update_layout(title=title, xaxis_title="pass", yaxis_title="fooling rate", yaxis_range=[0, 1], height=300,
                      xaxis={"dtick": 1}, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def v_digest(v: torch.Tensor) -> str:
    return hashlib.sha256(v.cpu().numpy().tobytes()).hexdigest()[:16]


def show_universal(step: universal.UniversalStep, live: bool) -> None:
    v = step.v if live else step.kept_v
    view, scale = universal.amplify(v)
    if live:
        c1, c2 = st.columns([1, 2])
        c1.image(optimization.visible(view), caption=f"v so far × {scale:.3g} · pass {step.pass_index}", width="stretch")
        if step.fooling_rate_per_pass:
            c2.plotly_chart(rate_figure(step.fooling_rate_per_pass, "Fooling rate after each pass"), key="uap_live_curve")
        return
    rates = step.fooling_rate_per_pass
    which = "the v so far (no pass finished)"
    if rates:
        best = len(rates) - rates[::-1].index(max(rates))
        which = f"v after pass {best}" + (" (the pass with the highest fooling rate)" if best != len(rates) else "")
    held_pixels = ui.run_or_explain(pixels_of, held_out, "held-out")
    digest = v_digest(v)
    check = ui.cached(("uap_eval", ctx.model_key, data_key, digest, p), lambda progress: universal.evaluate(model, held_pixels, v, p),
                      "Trying v on the held-out images")
    c1, c2 = st.columns([1, 2])
    c1.image(optimization.visible(view), caption=f"{which} × {scale:.3g} (gray = 0) · ‖v‖ ≤ ξ = {xi_text} ({norm})", width="stretch")
    with c2:
        m1, m2, m3 = st.columns(3)
        m1.metric(f"Images v was computed on ({step.total})", f"{max(rates):.0%}" if rates else "—")
        m2.metric(f"Held-out images ({len(held_pixels)})", f"{check.fooling_rate:.0%}")
        m3.metric("Random noise of the same norm", f"{check.noise_fooling_rate:.0%}")
        if step.fooling_rate_per_pass:
            st.plotly_chart(rate_figure(step.fooling_rate_per_pass, "Fooling rate after each pass (images v was computed on)"),
                            key="uap_curve")
    if not model.pretrained:
        st.caption("Random weights: the predictions are not meaningful, but the method works the same way.")
    shown = min(8, len(held_pixels))
    names = model.class_names
    perturbed = (held_pixels[:shown] + universal.resize_perturbation(v, held_pixels.shape[-2:])).clamp(0, 1)
    st.caption("Held-out images, before (top) and with v added (bottom), with the network's labels")
    st.image([optimization.visible(held_pixels[i : i + 1]) for i in range(shown)], width=120,
             caption=[names[int(check.labels_before[i])] for i in range(shown)])
    st.image([optimization.visible(perturbed[i : i + 1]) for i in range(shown)], width=120,
             caption=[("✗ " if check.labels_after[i] != check.labels_before[i] else "✓ ") + names[int(check.labels_after[i])]
                      for i in range(shown)])
    if not small:
        transfer_section(v, held_out, digest)
    stem = optimization.file_stem("universal", uap_params)
    sidecar = {"model": model.label, "scale_of_png": scale,
               "fooling_rate_per_pass": list(step.fooling_rate_per_pass), "held_out_fooling_rate": check.fooling_rate,
               "noise_fooling_rate": check.noise_fooling_rate}
    d1 = d2 = d3 = st.container(horizontal=True)  # full labels, wrapping when the row is narrow
    d1.download_button("Download PNG (v amplified)", png_bytes(pixels_to_array(view)), file_name=f"{stem}.png",
                       mime="image/png", key="uap_png", icon=":material/download:")
    d2.download_button("Download v (safetensors)", safetensors_bytes({"v": v.contiguous()}, {"xi": xi_text, "norm": norm, "model": model.name}),
                       file_name=f"{stem}.safetensors", mime="application/octet-stream", key="uap_tensor", icon=":material/download:")
    d3.download_button("Parameters (JSON)", ui.export.sidecar(uap_params, sidecar), file_name=f"{stem}.json",
                       mime="application/json", key="uap_json", icon=":material/data_object:")


def transfer_section(v: torch.Tensor, held_out: ImageDataset, digest: str) -> None:
    st.subheader("Transfer: the same v on another network")
    others = sorted((n for n in MODEL_NAMES if n not in (SMALL_CNN, model.name)), key=lambda n: not pretrained_available(n))
    left, right = st.columns([2, 3])
    other = left.selectbox("Second network", others, key="uap_other",
                           format_func=ui.labels({n: f"{n} ({'trained' if pretrained_available(n) else 'random weights'})"
                                                  for n in others}))
    weights = ui.PRETRAINED if pretrained_available(other) else ui.RANDOM
    if left.button("Try v on it", key="uap_transfer"):
        st.session_state["uap_transfer_for"] = (other, digest)
    if st.session_state.get("uap_transfer_for") != (other, digest):
        right.caption(f"v is resized to {other}'s input size and added to the same held-out images.")
        return
    second = ui.cached_model(other, weights)
    if not second.classifies:
        right.info(f"{other} has no class scores, so nothing can be fooled there. Choose another network.")
        return
    key = ("uap_transfer", other, weights, data_key, digest, p)
    check = ui.cached(key, lambda progress: universal.evaluate(second, held_out, v, p), f"Trying v on {other}")
    right.metric(f"Held-out images fooled on {second.label}", f"{check.fooling_rate:.0%}",
                 help=f"random noise of the same norm: {check.noise_fooling_rate:.0%}")


run, _ = optimization.buttons("uap", "Compute the universal perturbation")
optimization.stream(
    "uap_result", uap_params, make_steps, run, show_universal,
    describe=lambda s: f"pass {s.pass_index} of {s.max_passes}, image {s.step} of {s.total}", kept="perturbation",
)
