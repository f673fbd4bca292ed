"""Train a fast style network (Johnson et al. 2016), and instance norm against batch norm (Ulyanov et al. 2016)."""

import json
from dataclasses import asdict, replace

import plotly.graph_objects as go
import streamlit as st

import ui
from ui import style as ui_style
from cnnviz.data import photos_dataset
from cnnviz.display import pixels_to_array
from cnnviz.style import TrainingJob, load_checkpoint, save_checkpoint, stylize_with, train_style_network
from cnnviz.style.training import MAX_TRAIN_STEPS, SHIPPED, SHIPPED_STYLE, shipped_path

st.title("Train a style network")
ui.explainer(
    "Johnson, Alahi & Fei-Fei (2016, *Perceptual Losses for Real-Time Style Transfer*) train a network to do in "
    "one pass what Gatys' method does in hundreds of steps: downsampling convolutions, residual blocks, "
    "upsampling. Its loss is Gatys' loss, measured by VGG-16 on its output: content of the input photo, Gram "
    "matrices of the style image, total variation. Random crops of photos go in; only the small network learns, "
    "VGG-16 stays fixed.\n\n"
    "Ulyanov, Vedaldi & Lempitsky (2016, *Instance Normalization*) changed one thing: normalise each image's "
    "channels on their own (**instance norm**) instead of across the batch (**batch norm**). The contrast of the "
    "content image is then removed before the style is painted on, and the network trains to much better "
    "stylisations. Below are two networks trained once with the same seed, crops and settings, differing only "
    "in the normalisation, then a live run you can start yourself: its curves retrace the beginning of theirs."
)

vgg = ui_style.loss_model()
image, image_name, image_key = ui_style.current_image()


@st.cache_resource(show_spinner=False)
def shipped(norm: str):
    return load_checkpoint(shipped_path(norm))


st.subheader("Instance norm against batch norm")
show_size = st.select_slider("Size of the results (longer side, px)", [128, 192, 256, 384, 512], value=256, key="train_show_size")
x = ui_style.pixels(image, show_size)
columns = st.columns(3)
columns[0].image(ui_style.texture("immunohistochemistry"), caption=f"style: {SHIPPED_STYLE}", width="stretch")
histories = {}
for column, norm in zip(columns[1:], ("instance", "batch")):
    if not shipped_path(norm).is_file():
        column.info(f"The shipped {norm}-norm network is missing: run `python assets/train_style_networks.py {norm}`.")
        continue
    net, meta = shipped(norm)
    histories[norm] = json.loads(meta["history"])
    column.image(pixels_to_array(stylize_with(net, x)), width="stretch",
                 caption=f"{norm} norm · {meta['steps_done']} steps of {SHIPPED.batch_size} crops of {SHIPPED.size} px · width {SHIPPED.width}")


def curves(series: dict[str, list[dict]], key: str, title: str) -> go.Figure:
    fig = go.Figure()
    for name, history in series.items():
        fig.add_trace(go.Scatter(x=list(range(1, len(history) + 1)), y=[h[key] for h in history], mode="lines", name=name))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=key, height=300, margin=dict(l=10, r=10, t=50, b=10))
    return fig


left, right = st.columns(2)
if histories:
    left.plotly_chart(curves({f"{n} norm": h for n, h in histories.items()}, "style loss", "Style loss (training batches)"), width="stretch", key="train_shipped_style")
    right.plotly_chart(curves({f"{n} norm": h for n, h in histories.items()}, "content loss", "Content loss (training batches)"), width="stretch", key="train_shipped_content")

st.subheader("Train one yourself")
left, right = st.columns([1, 2])
with left:
    style_image, style_name = ui_style.style_picker("train", default="immunohistochemistry")
with right:
    c1, c2, c3 = st.columns(3)
    norm = c1.radio("Normalisation", ["instance", "batch"], horizontal=True, key="train_norm")
    steps = c2.slider("Steps", 10, MAX_TRAIN_STEPS, 200, step=10, key="train_steps")
    size = c3.select_slider("Crop size (px)", [32, 48, 64, 96, 128], value=SHIPPED.size, key="train_size")
    c4, c5, c6 = st.columns(3)
    style_weight = c4.select_slider("Style weight", [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0], value=SHIPPED.style_weight, key="train_style_weight")
    lr = c5.select_slider("Learning rate (Adam)", [5e-4, 1e-3, 2e-3, 5e-3], value=SHIPPED.lr, key="train_lr")
    content_choice = c6.radio("Content photos", ["gallery photos", "your zip"], key="train_content")
    upload = st.file_uploader("Zip of photos", type=["zip"], key="train_zip") if content_choice == "your zip" else None
settings = replace(SHIPPED, norm=norm, steps=steps, size=size, style_weight=style_weight, lr=lr)
same_as_shipped = (style_name == SHIPPED_STYLE and content_choice == "gallery photos"
                   and replace(settings, steps=SHIPPED.steps, norm=SHIPPED.norm) == SHIPPED)


def content_images():
    if upload is None:
        return photos_dataset().images
    import tempfile

    from cnnviz.data import zip_dataset

    return zip_dataset(upload.getvalue(), tempfile.mkdtemp(prefix="cnnviz_style_"), name="your photos").images


job: TrainingJob | None = st.session_state.get("train_job")
b1 = b2 = st.container(horizontal=True)  # buttons as wide as their labels, wrapping on a phone
start = b1.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start", disabled=bool(job and job.running))
if b2.button("Stop", icon=":material/stop:", key="train_stop") and job is not None:
    job.stop()
if start:
    if content_choice == "your zip" and upload is None:
        st.error("Choose a zip of photos, or train on the gallery photos.")
        st.stop()
    images = ui.run_or_explain(content_images)
    style_pixels = ui_style.pixels(style_image, settings.style_size)
    preview = ui_style.pixels(image, 192)
    job = TrainingJob(lambda: train_style_network(vgg, style_pixels, images, settings, preview=preview, every=5),
                      gate=ui.admission.gate(), owner=ui.training.session_uid()).start()
    st.session_state["train_job"] = job
    st.session_state["train_job_params"] = {"style": style_name, **asdict(settings), "same_as_shipped": same_as_shipped}


@st.fragment(run_every=1.0)
def progress() -> None:
    job = st.session_state.get("train_job")
    if job is None:
        st.caption(f"Press Start: a live run of {steps} steps takes a few minutes here.")
        return
    params = st.session_state["train_job_params"]
    latest = job.latest
    done = latest.step if latest else 0
    total = params["steps"]
    status = {"running": "training", "done": "done", "stopped": "stopped", "error": "failed"}[job.status if not job.running else "running"]
    st.progress(done / total, text=f"{status}: step {done} of {total}" + (f" · {latest.seconds:.0f} s" if latest else " · starting"))
    if job.running and job.queued:
        st.info(f"Waiting for a free slot: number {job.queued} in the server's queue. Training starts as soon as one "
                "frees, and takes turns with other students' jobs.", icon=":material/hourglass_top:")
    if job.error:
        st.error(job.error)
    if latest is None:
        return
    left, right = st.columns([1, 2])
    if job.preview is not None:
        left.image(pixels_to_array(job.preview), caption=f"{params['norm']} norm, step {done} (the current image, eval mode)", width="stretch")
    series = {f"live run ({params['norm']} norm)": list(latest.history)}
    if params["same_as_shipped"] and params["norm"] in histories:
        series[f"shipped ({params['norm']} norm)"] = histories[params["norm"]]
    right.plotly_chart(curves(series, "loss", "Training loss"), width="stretch", key="train_live_curve")
    if not job.running:
        blob = save_checkpoint(latest.network, metadata={"settings": {k: v for k, v in params.items() if k != "same_as_shipped"},
                                                         "steps_done": done, "history": list(latest.history)})
        st.download_button("Download the network (safetensors)", blob, file_name=f"style_{params['norm']}_{done}steps.safetensors",
                           mime="application/octet-stream", key="train_ckpt", icon=":material/download:")
        st.caption("Load it with `cnnviz.style.load_checkpoint(path)`; run it with `stylize_with(net, pixels)`.")
        ui.export.offer("train_curve", "style_training", {**params, "steps_done": done},
                        figure=curves(series, "loss", "Training loss"))


progress()
