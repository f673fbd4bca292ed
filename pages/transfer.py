"""Transfer learning: a new head on an ImageNet network's frozen features (or fine-tuning its last
block), against the same head on random features and the small CNN trained from scratch."""

import plotly.graph_objects as go
import streamlit as st

import ui
import ui.training as tr
from cnnviz.data import mnist_available, mnist_dataset
from cnnviz.models import MODEL_NAMES, WeightsUnavailable
from cnnviz.training import TrainConfig, faces_dataset, from_scratch, transfer_learning

st.title("Transfer learning")
ui.explainer(
    "A network trained on ImageNet has learned general features: edges and colours in its first layers, "
    "textures and parts deeper. With few images of a new task, **freeze** those features and train only a new "
    "**head** (global average pooling and one linear layer), or also **fine-tune** the last block (Yosinski et "
    "al., 2014; Razavian et al., 2014; CS231n lecture 7: with little data and a similar task, train a linear "
    "classifier on the top layer; with more data, fine-tune more layers).\n\n"
    "Three curves of validation accuracy per epoch: the head on the **trained** network, the same head on the "
    "same architecture with **random weights** (what the features are worth without ImageNet), and the small "
    "CNN **trained from scratch** on the same images. The frozen layers run once per image; only the head (and "
    "the fine-tuned block, a private copy) trains."
)

bases = [n for n in ("squeezenet1_1", "efficientnet_lite0") if n in MODEL_NAMES]
c1, c2, c3 = st.columns(3)
base_name = c1.selectbox("Network to transfer from", bases, key="transfer_base")
mode = c2.radio("Train", ["head", "finetune"], horizontal=True, key="transfer_mode",
                format_func={"head": "a new head (features frozen)", "finetune": "head + last block"}.get)
options = ["faces vs not faces (scikit-image, 200)"] + (["MNIST digits (500)"] if mnist_available() else []) + [tr.ZIP]
source = c3.selectbox("Small dataset", options, key="transfer_data")
c1, c2, c3 = st.columns(3)
epochs = c1.slider("Epochs", 5, 60, 20, 5, key="transfer_epochs")
size = c2.select_slider("Input size (px)", [64, 96, 112, 160, 224], 112, key="transfer_size",
                        help="Smaller is faster; ImageNet networks see 224 px.")
scratch_epochs = c3.slider("Epochs of the small CNN from scratch", 5, 60, 20, 5, key="transfer_scratch_epochs")

if source.startswith("faces"):
    dataset = faces_dataset()
elif source.startswith("MNIST"):
    dataset = mnist_dataset("train", limit=500)
else:
    upload = st.file_uploader("Zip of images, one folder per class", type=["zip"], key="transfer_zip")
    if upload is None:
        st.info("Choose a zip file: one folder per class, with PNG or JPEG images inside.")
        st.stop()
    import hashlib

    dataset = ui.run_or_explain(tr.zip_images, hashlib.sha256(upload.getvalue()).hexdigest(), upload.getvalue())
st.caption(f"{dataset.name}: {len(dataset)} images, classes {', '.join(dataset.class_names[:10])}; 30 % held out "
           "for validation (seeded, stratified).")

try:
    trained = ui.cached_model(base_name, ui.PRETRAINED)
except (WeightsUnavailable, ValueError) as error:
    st.warning(f"The trained {base_name} is not available here, so there is nothing to transfer from. {error}")
    st.stop()
random = ui.cached_model(base_name, ui.RANDOM)
tr.other_job_notice("transfer learning")
running = tr.current_job() is not None and tr.current_job().running


def compare(stop):
    yield from transfer_learning(trained, dataset, mode, epochs=epochs, size=size, stop=stop,
                                 method=f"{mode} on the trained {base_name}")
    yield from transfer_learning(random, dataset, mode, epochs=epochs, size=size, stop=stop,
                                 method=f"{mode} on random weights")
    config = TrainConfig(epochs=scratch_epochs, lr=2e-3, batch_size=32, eval_train=200)
    yield from from_scratch(dataset, config, size=32, channels=3, stop=stop)


if st.button("Compare", type="primary", icon=":material/play_arrow:", key="transfer_start", disabled=running):
    if tr.start_job("transfer learning", compare, dataset=dataset.name, base=base_name, mode=mode, epochs=epochs,
                    size=size, scratch_epochs=scratch_epochs):
        st.rerun()


def draw(snap, job) -> None:
    if snap.status == "error":
        st.error(snap.error)
    methods: dict[str, list] = {}
    for record in snap.items:
        methods.setdefault(record.method, []).append(record)
    if snap.status == "running":
        st.progress(min(1.0, len(snap.items) / (2 * epochs + scratch_epochs)),
                    text=f"{list(methods)[-1] if methods else 'Running the frozen layers once'} · {snap.seconds:.0f} s")
    if not methods:
        return
    cols = st.columns(len(methods))
    for col, (method, records) in zip(cols, methods.items()):
        col.metric(method, f"{records[-1].val_accuracy:.1%}", help=f"validation accuracy after epoch {records[-1].epoch}, "
                   f"{records[-1].seconds:.1f} s")
    fig = go.Figure()
    for method, records in methods.items():
        fig.add_trace(go.Scatter(x=[r.epoch for r in records], y=[r.val_accuracy for r in records], mode="lines+markers",
                                 name=method))
    fig.update_layout(xaxis_title="epoch", yaxis_title="validation accuracy", yaxis_tickformat=".0%", height=380,
                      yaxis_range=[0, 1.02], margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.25),
                      title=f"{job.extra['dataset']}")
    st.plotly_chart(fig, width="stretch", key="transfer_fig")
    if not job.running:
        ui.export.offer("transfer", "transfer", dict(job.extra), figure=fig)


tr.poll("transfer learning", draw)
