"""Live: the camera (or a bundled clip) through the network at video rate, with its predictions, one
layer's feature maps and a saliency overlay that follow what the camera sees."""


import streamlit as st

import ui
import ui.datasets
import ui.live
from cnnviz import display
from cnnviz.attribution import default_cam_layer
from cnnviz.features import channel_maxima, maximally_activating_patches
from cnnviz.live import MAX_SIDE, LiveSettings, channel_grid

st.title("Live: the network on your camera")
ui.explainer(
    "Each camera frame goes through the network as you move, as in the Deep Visualization Toolbox "
    "(Yosinski et al., 2015). Press **START** and allow the camera. Beside the video:\n\n"
    "- the **top-5 predictions** for the frame;\n"
    "- every **feature map** of the chosen layer (one tile per channel, brighter = stronger), and the picked "
    "channel large: hold up a face, a hand or a mug and watch which channels light up;\n"
    "- on the video, a **saliency map**: Grad-CAM (Selvaraju et al., 2017), which weights the last feature maps "
    "by how much the top class depends on them, or the vanilla gradient (Simonyan et al., 2014), how much each "
    "pixel changes the top class's score. The model sees only the centred square drawn on the video "
    "(its usual resize and centre crop).\n\n"
    "Frames are processed in the background as fast as the model allows; while it is busy, newer frames "
    "replace older ones, so the picture never lags. **Frames per second** counts processed frames, "
    "**latency** the time from a frame's arrival to its result. **Freeze** makes the current frame the "
    "image of every other page (the sidebar shows it as \"Live frame\"). Without a camera, play the "
    "**bundled clip**: slow pans and zooms over the gallery photos."
)

ctx = ui.context()
model = ctx.model
live = ui.live.session()
layers = list(ui.spatial_layers(ctx))
channels_of = ui.spatial_layers(ctx)

# ---------------------------------------------------------------- controls
c1, c2, c3, c4 = st.columns([3, 1, 2, 2])
default_layer = ui.teaching_layers(ctx)["feature"]  # a mid-depth block output, not a batch norm or shortcut
layer = c1.selectbox("Layer", layers, index=layers.index(default_layer), key=f"live_layer_{ctx.model_key}")
channels = channels_of[layer]
strongest = ui.strongest_channel(ctx, layer)  # strongest on the sidebar image: a channel that responds to something
channel = int(c2.number_input("Channel", 0, channels - 1, strongest, key=f"live_channel_{ctx.model_key}_{layer}"))
labels = {"grad_cam": "Grad-CAM", "vanilla_gradient": "Vanilla gradient", "none": "None"}
overlay = c3.selectbox("Saliency on the video", list(labels), format_func=labels.get, key="live_overlay")
alpha = c4.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="live_alpha")
cam_layer = ui.cached(("cam layer", ctx.model_key), lambda _: default_cam_layer(model.module, ctx.x), "Finding the Grad-CAM layer", heavy=False)
live.processor.configure(LiveSettings(model, layer, channel, overlay, cam_layer, alpha))

status = ui.live.camera_status()
if status in ui.live.CAMERA_MESSAGES:
    st.warning(ui.live.CAMERA_MESSAGES[status] + " Play the bundled clip instead: press START below.",
               icon=":material/videocam_off:")
no_camera = status in ui.live.CAMERA_MESSAGES
source = st.radio("Video source", [ui.live.CAMERA, ui.live.CLIP], index=1 if no_camera else 0, horizontal=True,
                  key=f"live_source_{'clip' if no_camera else 'camera'}",
                  help="The bundled clip pans and zooms over the gallery photos, for a computer without a camera.")
ui.live.prepare_clip(live, model)


left, right = st.columns([2, 3], gap="large")
with left:
    stream = ui.live.stream(live, source)
    playing = stream is not None and bool(stream.state.playing)
    st.button("Freeze this frame", on_click=ui.live.freeze, args=(live,), icon=":material/ac_unit:", key="live_freeze",
              help="Make the current frame the image of every other page.")
    st.caption(f"{model.label} · frames at most {MAX_SIDE} px · one stream per session")


@st.fragment(run_every=1.0 if playing else None)
def panel() -> None:
    """Predictions, feature maps and rates of the latest processed frame (refreshed once a second: each refresh draws hundreds of maps, and faster refreshes cost the model frames)."""
    stats = live.processor.stats()
    result = live.processor.latest()
    m1, m2, m3 = st.columns(3)
    m1.metric("Frames per second", f"{stats.fps:.1f}" if playing else "–")
    m2.metric("Latency", f"{stats.latency * 1000:.0f} ms" if playing and stats.processed else "–")
    m3.metric("Dropped frames", f"{stats.dropped}")
    if stats.error:
        st.error(stats.error)
    if result is None or result.layer != layer or result.maps.shape[0] != channels:
        st.info("Press START to stream" + (" the clip." if source == ui.live.CLIP else " your camera."))
        return
    maps = result.maps
    strongest = int(maps.flatten(1).amax(1).argmax())
    p1, p2 = st.columns(2)
    with p1:
        st.markdown(f"**Top-5** · saliency for “{model.class_names[result.target]}”")
        for name, probability in result.predictions:
            st.progress(probability, text=f"{name} · {probability:.1%}")
    p2.image(display.upscale(display.colormap(display.normalize(result.channel_map), "Viridis"), 200), width="stretch",
             caption=f"{layer}, channel {result.channel} (max {float(result.channel_map.max()):.3g}); "
                     f"strongest now: {strongest}")
    shown = min(len(maps), 256)
    st.image(channel_grid(maps, result.channel, shown), width="stretch",
             caption=f"{layer}: {shown} of {len(maps)} feature maps, {maps.shape[1]}×{maps.shape[2]} each "
                     f"(channel 0, 1, ... left to right, top to bottom; channel {result.channel} framed in red)")
    st.caption(f"Saliency: {labels[result.overlay]}" + (f" at {result.cam_layer}" if result.cam_layer else "")
               + f" · {result.seconds * 1000:.0f} ms per frame · {model.label}")


with right, st.container(key="live_panel"):
    ui.live.keep_steady("live_panel")
    panel()

# ---------------------------------------------------------------- compare with a dataset
if st.toggle("Compare with the channel's maximally activating patches from a dataset", key="live_patches"):
    dataset, dataset_key = ui.datasets.choose_dataset(model.name, "live", big_model_limit=8)
    maxima = ui.cached(
        ("maxima", ctx.model_key, dataset_key, layer),
        lambda progress: channel_maxima(model, dataset, layer, batch_size=64, progress=progress),
        f"Running {len(dataset)} images through {model.name}",
    )
    patches = maximally_activating_patches(model, dataset, layer, channel, k=min(8, len(dataset)), maxima=maxima)
    st.caption(f"The images of {dataset.name} where channel {channel} of {layer} fires most, cropped to what the unit "
               "sees (computed once; see the Maximally activating patches page).")
    for column, patch in zip(st.columns(len(patches)), patches):
        column.image(patch.image.resize((96, 96), 0), caption=f"{patch.hit.value:.3g} · #{patch.hit.index}")
