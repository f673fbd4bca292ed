"""Streamlit glue for the "Training" pages: one background job per session (training, a search,
an ensemble, transfer learning) polled by a fragment, the networks trained in this session (listed
in the sidebar, for this session only), and the training data choice.

A background thread has no Streamlit context, so it never calls ``st.*``: it only fills a
``cnnviz.training.live.BackgroundRun`` that the page's fragment reads every second.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from typing import Callable

import numpy as np
import streamlit as st

from cnnviz.admission import shared_gate
from cnnviz.data import TORCHVISION_DATASETS, mnist_available, torchvision_dataset, zip_dataset
from cnnviz.display import pixels_to_array, upscale
from cnnviz.models import LoadedModel
from cnnviz.training import TrainConfig, TrainData, TrainResult, dataset_data, digits_data, mnist_data, to_loaded_model
from cnnviz.training.live import BackgroundRun, Snapshot

JOB = "_training_job"
TRAINED = "_trained_networks"
MAX_TRAINED = 4
MNIST, DIGITS, ZIP = "MNIST digits (real, 5,000)", "digits (scikit-learn, 1,797)", "your zip of images"


# --- the session's trained networks -----------------------------------------------------------------


def session_uid() -> str:
    """A random id of this browser session: part of every trained network's cache key."""
    return st.session_state.setdefault("_session_uid", uuid.uuid4().hex[:12])


def trained_networks() -> dict[str, dict]:
    """This session's trained networks: model key -> {"model", "result", "title", "records"}, oldest first."""
    return st.session_state.setdefault(TRAINED, {})


def session_models() -> dict[str, tuple[str, LoadedModel]]:
    """Title -> (model key, ``LoadedModel``) for the sidebar; keys are unique to this session and run."""
    return {entry["title"]: (key, entry["model"]) for key, entry in trained_networks().items()}


def session_history(model_key: str) -> list[dict] | None:
    """The per-epoch snapshots of a network trained in this session (epoch 0 = initialisation)."""
    entry = trained_networks().get(model_key)
    return entry["result"].snapshots if entry else None


def register(result: TrainResult, what: str = "", records: list | None = None) -> str:
    """Make a finished run selectable in the sidebar for this session; returns its model key.

    Args:
        records: the run's records (for reading its curves on the recipe page).
    """
    networks = trained_networks()
    number = st.session_state.get("_trained_count", 0) + 1
    st.session_state["_trained_count"] = number
    key = f"trained|{session_uid()}|{number}|{uuid.uuid4().hex[:8]}"
    model = to_loaded_model(result)
    title = f"trained here #{number}: {what or result.data_name.split(' (')[0]}, {result.val_accuracy:.1%}"
    networks[key] = {"model": model, "result": result, "title": title, "records": records or []}
    while len(networks) > MAX_TRAINED:
        oldest = next(iter(networks))
        if st.session_state.get("model_name") == networks[oldest]["title"]:
            break
        del networks[oldest]
    return key


def latest_network() -> dict | None:
    """The entry of the network trained last in this session, or None."""
    networks = trained_networks()
    key = st.session_state.get("train_last_key")
    return networks.get(key) or (networks[list(networks)[-1]] if networks else None)


def use_network(key: str) -> None:
    """Button callback: select the trained network in the sidebar."""
    st.session_state["model_name"] = trained_networks()[key]["title"]


# --- one background job per session -----------------------------------------------------------------


def current_job() -> BackgroundRun | None:
    return st.session_state.get(JOB)


def start_job(name: str, make_items: Callable, finish: Callable[[Snapshot, BackgroundRun], None] | None = None,
              **extra) -> bool:
    """Start ``make_items(stop_event)`` in the background unless a job of this session still runs.

    Args:
        finish: called once, in a script run (never in the thread), after the job ended: e.g. to
            register the trained network. ``extra`` is kept on the job for the page.

    Returns:
        False (with a message) when another job is running: one at a time per session.
    """
    job = current_job()
    if job is not None and job.running:
        st.warning(f"A {job.name} is still running in this session: stop it or wait until it ends.")
        return False
    job = BackgroundRun(make_items, name=name, gate=shared_gate(), owner=session_uid())
    job.extra, job.finish, job.handled = extra, finish, False  # type: ignore[attr-defined]
    st.session_state[JOB] = job.start()
    return True


def collect() -> None:
    """Run the finished job's ``finish`` once (before the sidebar lists the session's networks)."""
    job = current_job()
    if job is None or job.running or job.handled:
        return
    job.handled = True
    if job.finish is not None:
        job.finish(job.snapshot(), job)


def before_sidebar() -> None:
    """What every script run does first: keep the training widgets' values, collect a finished job."""
    session_uid()
    keep_settings()
    collect()


def poll(name: str, draw: Callable[[Snapshot, BackgroundRun], None], every: float = 1.0) -> None:
    """Draw the session's job called ``name`` in a fragment that reruns every ``every`` s while it runs.

    When the job ends the whole app reruns once: the polling stops and the sidebar lists what was
    trained (see ``collect``).
    """
    job = current_job()
    if job is None or job.name != name:
        return
    running = job.running

    @st.fragment(run_every=every if running else None)
    def live() -> None:
        snap = job.snapshot()
        if snap.status == "running":
            if st.button("Stop", key=f"stop_{name}", icon=":material/stop:", help="Stops within one iteration."):
                job.stop()
            if snap.queued:
                st.info(f"The {name} waits for a free slot: number {snap.queued} in the server's queue. It starts "
                        "as soon as one frees, and takes turns with other students' jobs.", icon=":material/hourglass_top:")
        draw(snap, job)
        if running and snap.status != "running":
            st.rerun()

    live()


def other_job_notice(name: str) -> None:
    """Say so when a job of another kind is running in this session."""
    job = current_job()
    if job is not None and job.running and job.name != name:
        st.info(f"A {job.name} is running in this session; this page can start its own when it ends.")


def items_of(snap: Snapshot, kind: str) -> list:
    return [r for r in snap.items if getattr(r, "kind", None) == kind]


# --- training data ----------------------------------------------------------------------------------


@st.cache_resource(show_spinner="Preparing the digits…", max_entries=4)
def _offline_data(name: str) -> TrainData:
    """Shared read-only tensors of the offline datasets (never modified: subsets are copies)."""
    return mnist_data() if name == MNIST else digits_data()


@st.cache_resource(show_spinner="Reading the zip…", max_entries=4)
def _zip_data(digest: str, _data: bytes, size: int, channels: int) -> TrainData:
    return dataset_data(zip_dataset(_data, tempfile.mkdtemp(prefix="cnnviz_train_zip_"), name="your zip"),
                        size=size, channels=channels)


@st.cache_resource(show_spinner="Reading the zip…", max_entries=4)
def zip_images(digest: str, _data: bytes):
    """An uploaded zip of images (safe extraction), shared read-only."""
    return zip_dataset(_data, tempfile.mkdtemp(prefix="cnnviz_transfer_zip_"), name="your zip")


@st.cache_resource(show_spinner="Loading the dataset (downloading once if a network is there)…", max_entries=4)
def _torchvision_data(name: str, limit: int, size: int, channels: int) -> TrainData:
    return dataset_data(torchvision_dataset(name, train=True, limit=limit), size=size, channels=channels)


def dataset_options() -> list[str]:
    return ([MNIST] if mnist_available() else []) + [DIGITS, ZIP, *TORCHVISION_DATASETS]


def choose_data(key: str = "tr_train") -> tuple[TrainData, str]:
    """The training-data widgets; returns the data and a key naming it. Stops the page with a
    message when the data cannot be used."""
    options = dataset_options()
    left, mid, right = st.columns([3, 1, 1])
    name = left.selectbox("Data", options, key=f"{key}_data",
                          help="The real MNIST digits are not fetched yet: `cnnviz.sources.fetch_sources()` on a connected machine."
                          if MNIST not in options else "4,000 real handwritten digits to train on, 1,000 held out.")
    if name in (MNIST, DIGITS):
        return _offline_data(name), name
    size = int(mid.selectbox("Size (px)", [16, 24, 32, 48, 64], key=_default(f"{key}_size", 32)))
    channels = 1 if right.radio("Colour", ["gray", "RGB"], key=f"{key}_channels", horizontal=True) == "gray" else 3
    try:
        if name == ZIP:
            upload = st.file_uploader("Zip of images, one folder per class", type=["zip"], key=f"upload_{key}_zip")
            if upload is None:
                st.info("Choose a zip file: one folder per class, with PNG or JPEG images inside.")
                st.stop()
            data = upload.getvalue()
            digest = hashlib.sha256(data).hexdigest()
            return _zip_data(digest, data, size, channels), f"zip:{digest}:{size}:{channels}"
        limit = int(st.number_input("Images", 200, 20000, step=500, key=_default(f"{key}_limit", 5000)))
        return _torchvision_data(name, limit, size, channels), f"{name}:{limit}:{size}:{channels}"
    except ValueError as error:
        st.error(str(error))
        st.stop()


def image_grid(pixels, columns: int = 8, px: int = 64) -> np.ndarray:
    """(N, C, H, W) pixels in [0, 1] -> one uint8 grid image, each tile enlarged to ``px``."""
    tiles = [upscale(pixels_to_array(pixels[i:i + 1]), px) for i in range(len(pixels))]
    tiles = [t if t.ndim == 3 else np.repeat(t[..., None], 3, axis=2) for t in tiles]
    rows = []
    for start in range(0, len(tiles), columns):
        row = tiles[start:start + columns]
        row += [np.full_like(tiles[0], 255)] * (columns - len(row))
        rows.append(np.concatenate([np.pad(t, ((1, 1), (1, 1), (0, 0)), constant_values=255) for t in row], axis=1))
    return np.concatenate(rows, axis=0)


# --- the training settings, shared by the Train and recipe pages -----------------------------------

LRS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
DECAYS = [0.0, 1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1]
PERSISTENT_PREFIX = "tr_"
"""Widgets whose key starts with this keep their values when the user visits other pages."""


def _default(key: str, value: object) -> str:
    """Put a widget's default value into Session State once and return its key. A widget whose
    value comes from Session State (as ``keep_settings`` re-assigns it) gets no default argument,
    which Streamlit would otherwise warn about."""
    st.session_state.setdefault(key, value)
    return key


def keep_settings() -> None:
    """Keep the training widgets' values across pages (Streamlit forgets the state of widgets that a
    run does not draw, unless their keys are re-assigned in every run). Called by the sidebar."""
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(PERSISTENT_PREFIX)]:
        st.session_state[key] = st.session_state[key]


def settings_widgets() -> TrainConfig:
    """Architecture, regularisation, augmentation and optimisation widgets (in tabs) -> ``TrainConfig``."""
    from cnnviz.training import ACTIVATIONS, INITS, AugmentConfig, NetConfig

    arch, reg, aug, opt = st.tabs(["Architecture", "Regularisation", "Augmentation", "Optimisation"])
    with arch:
        c1, c2, c3, c4 = st.columns(4)
        width = c1.select_slider("Width (channels of block 1)", [4, 8, 16, 32, 64], key=_default("tr_width", 16))
        depth = c2.slider("Depth (blocks)", 1, 4, key=_default("tr_depth", 2), help="Each block halves the feature maps.")
        convs = c3.slider("Convolutions per block", 1, 3, key=_default("tr_convs", 2))
        pool = c4.selectbox("Pooling", ["max", "avg", "fractional"], key="tr_pool",
                            help="Fractional max pooling shrinks by 1/√2 with random regions (Graham, 2014).")
        c1, c2, c3, c4 = st.columns(4)
        activation = c1.selectbox("Activation", list(ACTIVATIONS), key="tr_activation")
        init = c2.selectbox("Initialisation", list(INITS), key=_default("tr_init", list(INITS)[1]),
                            help="kaiming = He/MSRA, xavier = Glorot, normal = N(0, σ²), default = PyTorch's.")
        init_std = c2.select_slider("σ of normal init", [1e-3, 1e-2, 0.05, 0.1, 0.5, 1.0], key=_default("tr_init_std", 1e-2),
                                    disabled=init != "normal")
        batch_norm = c3.checkbox("Batch norm", key="tr_bn")
        residual = c3.checkbox("Residual variant", key="tr_residual", help="Each block: a conv, then conv-act-conv + identity.")
        dropout = c4.slider("Dropout p (before the last layer)", 0.0, 0.8, step=0.05, key=_default("tr_dropout", 0.0))
    with reg:
        c1, c2, c3 = st.columns(3)
        regularization = c1.radio("Weight penalty", ["none", "l2", "l1", "elastic"], key=_default("tr_reg", "l2"),
                                  horizontal=True, help="L2 is applied as weight decay (decoupled for AdamW).")
        weight_decay = c1.select_slider("Strength λ", DECAYS, key=_default("tr_wd", 0.0), format_func=lambda v: f"{v:g}")
        l1_ratio = c1.slider("L1 share (elastic net)", 0.0, 1.0, key=_default("tr_l1_ratio", 0.5), disabled=regularization != "elastic")
        dropconnect = c2.slider("DropConnect p (last layer's weights)", 0.0, 0.8, step=0.05, key=_default("tr_dropconnect", 0.0))
        stochastic_depth = c2.slider("Stochastic depth (residual variant)", 0.0, 0.8, step=0.05, key=_default("tr_sdepth", 0.0),
                                     disabled=not residual, help="Probability that the last residual unit is skipped.")
        patience = c3.slider("Early stopping patience (epochs, 0 = off)", 0, 10, key=_default("tr_patience", 0),
                             help="The best validation epoch's weights are always kept.")
    with aug:
        c1, c2, c3, c4, c5 = st.columns(5)
        hflip = c1.checkbox("Horizontal flip", key="tr_hflip", help="Wrong for digits: a mirrored 3 is no digit.")
        crop = c2.slider("Random crop & scale", 0.0, 0.3, step=0.05, key=_default("tr_crop", 0.0))
        jitter = c3.slider("Colour jitter", 0.0, 0.6, step=0.05, key=_default("tr_jitter", 0.0))
        cutout = c4.slider("Cutout (fraction of the side)", 0.0, 0.6, step=0.05, key=_default("tr_cutout", 0.0))
        mixup = c5.slider("Mixup α", 0.0, 1.0, step=0.1, key=_default("tr_mixup", 0.0))
    with opt:
        c1, c2, c3, c4 = st.columns(4)
        optimizer = c1.selectbox("Optimizer", ["adam", "adamw", "sgd"], key="tr_optimizer", help="SGD uses momentum 0.9.")
        lr = c2.select_slider("Learning rate", LRS, key=_default("tr_lr", 2e-3), format_func=lambda v: f"{v:g}")
        schedule = c3.selectbox("Schedule", ["cosine", "step", "constant"], key="tr_schedule")
        warmup = c3.slider("Warm-up (epochs)", 0.0, 3.0, step=0.5, key=_default("tr_warmup", 0.0))
        batch = c4.select_slider("Batch size", [8, 16, 32, 64, 128, 256], key=_default("tr_batch", 64))
        epochs = c4.slider("Epochs", 1, 30, key=_default("tr_epochs", 6))
        seed = c1.number_input("Seed", 0, 10_000, key=_default("tr_seed", 0), help="Seeds initialisation, order and augmentation.")
    net = NetConfig(width=width, depth=depth, convs_per_block=convs, activation=activation, init=init,
                    init_std=init_std, batch_norm=batch_norm, dropout=dropout, pool=pool, residual=residual,
                    stochastic_depth=stochastic_depth if residual else 0.0, dropconnect=dropconnect)
    return TrainConfig(net=net, augment=AugmentConfig(hflip, crop, jitter, cutout, mixup), optimizer=optimizer, lr=lr,
                       schedule=schedule, warmup_epochs=warmup, batch_size=batch, epochs=epochs,
                       regularization=regularization, weight_decay=weight_decay, l1_ratio=l1_ratio,
                       patience=patience or None, seed=int(seed))
