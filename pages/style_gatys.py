"""Style transfer by optimisation (Gatys, Ecker & Bethge 2016)."""

import streamlit as st

import ui
from ui import optimization
from ui import style as ui_style
from cnnviz.style import CONTENT_LAYER, STYLE_LAYERS, VGG_LAYERS, gatys_seconds, style_transfer
from cnnviz.style.gatys import GATYS_SIZE, GATYS_STEPS
from cnnviz.synthesis import MAX_SIZE, MAX_STEPS, image_pixels

st.title("Style transfer (Gatys)")
ui.explainer(
    "Paint the current image in the style of another (Gatys, Ecker & Bethge, 2016, *Image Style Transfer Using "
    "Convolutional Neural Networks*). Start from the content image (or noise) and change its pixels to lower "
    "three losses at once: the **content loss** ‖Φ(x) − Φ(c)‖² / ‖Φ(c)‖², the distance of VGG-16's conv4_2 "
    "features to the content image's, which keeps the layout; the **style loss** Σ_l ‖G_l(x) − A_l‖² / ‖A_l‖² / L, "
    "the distance of the Gram matrices of conv1_1 … conv5_1 to the style image's, which brings its colours, "
    "strokes and textures; and **total variation**, which keeps neighbouring pixels alike. The weights trade "
    "them off: more style weight, more paint. It takes hundreds of steps, each a forward and backward pass "
    "through VGG-16: this is why fast style networks were invented (see *Fast style*). **L-BFGS** (the "
    "paper's optimiser) evaluates the network a few times per step and usually needs fewer steps than **Adam**."
)

vgg = ui_style.loss_model()
content_image, content_name, _ = ui_style.current_image()
left, right = st.columns([1, 2])
with left:
    style_image, style_name = ui_style.style_picker("gatys")
with right:
    c1, c2, c3 = st.columns(3)
    content_weight = c1.select_slider("Content weight α", [0.0, 0.01, 0.1, 1.0, 10.0, 100.0], value=1.0, key="gatys_alpha")
    style_weight = c2.select_slider("Style weight β", [0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0], value=10.0, key="gatys_beta")
    tv_weight = c3.select_slider("TV weight γ", [0.0, 1.0, 10.0, 100.0, 1000.0], value=10.0, key="gatys_tv")
    c4, c5, c6 = st.columns(3)
    optimizer = c4.radio("Optimizer", ["adam", "lbfgs"], format_func={"adam": "Adam", "lbfgs": "L-BFGS"}.get, horizontal=True, key="gatys_opt")
    steps = c5.slider("Steps", 10, MAX_STEPS, GATYS_STEPS if optimizer == "adam" else 50, step=10, key=f"gatys_steps_{optimizer}")
    size = c6.select_slider("Output size (longer side, px)", [128, 192, 256, 384, MAX_SIZE], value=GATYS_SIZE, key="gatys_size")
    c7, c8, c9 = st.columns(3)
    init = c7.radio("Start from", ["content", "noise"], horizontal=True, key="gatys_init")
    lr = c8.select_slider("Adam step (pixel units)", [0.005, 0.01, 0.02, 0.05], value=0.02, key="gatys_lr", disabled=optimizer != "adam")
    with c9.popover("Layers"):
        style_layers = st.multiselect("Style layers", list(VGG_LAYERS), default=list(STYLE_LAYERS), key="gatys_style_layers")
        content_layer = st.selectbox("Content layer", list(VGG_LAYERS), index=list(VGG_LAYERS).index(CONTENT_LAYER), key="gatys_content_layer")
    st.caption(f"Adam at these settings takes about {gatys_seconds(size, steps):.0f} s on a quiet 2-core machine.")
style_layers = [layer for layer in VGG_LAYERS if layer in style_layers]  # depth order
params = {"model": vgg.name, "weights": vgg.weights, "content": content_name, "style": style_name, "content_weight": content_weight,
          "style_weight": style_weight, "tv_weight": tv_weight, "optimizer": optimizer, "steps": steps, "size": size,
          "init": init, "lr": lr, "style_layers": style_layers, "content_layer": content_layer}


def show(step, live):
    a, b, c = st.columns([1, 1, 2])
    a.image(image_pixels(vgg, content_image, 256).squeeze(0).permute(1, 2, 0).numpy(), caption=f"content: {content_name}", width="stretch")
    b.image(style_image, caption=f"style: {style_name}", width="stretch")
    c.image(optimization.visible(step.pixels), caption=f"step {step.step} of {step.total} · {vgg.label}", width="stretch")
    fig = optimization.loss_figure(step.history, {"content loss": "content loss", "style loss": "style loss", "TV²": "TV^2"}, "Losses")
    st.plotly_chart(fig, width="stretch", key=f"gatys_curve_{step.step}" if live else "gatys_curve")


def transfer(size: int, steps: int, lr: float, optimizer: str):
    def steps_of():
        if not style_layers:
            raise ValueError("Pick at least one style layer.")
        content = image_pixels(vgg, content_image, size)
        style = image_pixels(vgg, style_image, size)
        return style_transfer(vgg, content, style, content_layer=content_layer, style_layers=style_layers,
                              content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
                              optimizer=optimizer, steps=steps, size=size, lr=lr, init=init, every=max(1, steps // 30))
    return steps_of


# the first view: Adam at 128 px for 40 small steps from the content, 5 s here (the defaults take about a minute)
PREVIEW_SIZE, PREVIEW_STEPS, PREVIEW_LR = 128, 40, 0.01
preview = optimization.Preview(
    {**params, "optimizer": "adam", "size": PREVIEW_SIZE, "steps": PREVIEW_STEPS, "lr": PREVIEW_LR},
    transfer(PREVIEW_SIZE, PREVIEW_STEPS, PREVIEW_LR, "adam"), f"Adam at {PREVIEW_SIZE} px for {PREVIEW_STEPS} steps")
run, _ = optimization.buttons("gatys", "Transfer the style")
state = optimization.stream("gatys_result", params, transfer(size, steps, lr, optimizer), run, show,
                            first_view=True, preview=preview)
if state and state["last"] is not None:
    last = state["last"]
    optimization.downloads("gatys", "gatys", state["params"], last.pixels,
                           {"model": vgg.label, "stopped_at_step": last.step, "final_losses": last.losses})
