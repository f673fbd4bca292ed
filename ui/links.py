"""Views you can link to, and presenter mode.

The page is the URL path (``st.navigation``). The sidebar's model, weights choice and sample image,
presenter mode, and every keyed page widget with a simple value (int, float, str, bool, or a list
or tuple of those) live in the query string, so opening that URL restores the view:

    /saliency?model=squeezenet1_1&weights=pretrained&image=cat&saliency_samples=10

One mechanism serves every page. ``before_run`` (start of every script run) reads the query string on
a session's first run, applies the sidebar's values at once, and later applies the page's values that
the previous run showed widgets for, coerced to each widget's type and checked against a slider's
range; anything else is dropped with a toast, never an exception. ``after_run`` (after the page ran)
writes the current values back to ``st.query_params``: model, weights and image always (so a link
does not depend on the opening machine's defaults), page widgets only when they differ from the
value they first showed. Keys that hold the current model's or image's cache key carry ``MODEL`` or
``IMAGE`` in their place. Buttons, file uploaders and camera inputs never go into the URL.

Reading the widgets of a run uses Streamlit's session internals (widget ids and metadata); when
those are not there, links carry the sidebar's values only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from cnnviz.models import MODEL_NAMES, default_model, missing_weights_hint, pretrained_available
from cnnviz.samples import sample_names

PRESENTER = "presenter"
MODEL, WEIGHTS, IMAGE = "model", "weights", "image"
MODEL_TOKEN, IMAGE_TOKEN = "MODEL", "IMAGE"  # stand for the current model's / image's cache key in a URL key
TRAVELLING_WEIGHTS = ("pretrained", "random")
# Session keys the sidebar handles itself, never written as page widgets.
SIDEBAR_KEYS = re.compile(r"^(model_name|image_source|gallery_choice|image_upload|image_camera|weights_.*|presenter)$")
RESERVED = {"embed", "embed_options"}  # Streamlit's own query parameters
MAX_ROUNDS = 4  # page widgets that appear only once others are set (compare mode) need another run
_STATE = "_links"


@dataclass
class LinkState:
    """One session's link bookkeeping (kept in ``st.session_state``)."""

    pending: dict[str, list[str]] = field(default_factory=dict)  # URL name -> raw values, not applied yet
    applied: dict[str, Any] = field(default_factory=dict)  # widget key -> value applied before this run
    to_apply: dict[str, Any] = field(default_factory=dict)  # widget key -> value for the next run
    from_url: set[str] = field(default_factory=set)  # widget keys the link set: always written back
    baseline: dict[str, Any] = field(default_factory=dict)  # widget key -> the value it first showed
    dropped: list[str] = field(default_factory=list)  # "name=value" the link held but this machine cannot use
    notes: list[str] = field(default_factory=list)  # what the link panel says about the opened link
    rounds: int = 0


def image_slug(name: str) -> str:
    """The short URL name of a gallery image: ``"cat (scikit-image)"`` -> ``"cat"``, ``"digit 3"`` -> ``"digit-3"``."""
    return re.sub(r"\s+", "-", name.split(" (")[0].strip().lower())


def image_from_slug(value: str) -> str | None:
    """The gallery image a URL names (its slug or its full name), or None."""
    for name in sample_names():
        if value in (name, image_slug(name)):
            return name
    return None


def _state() -> LinkState:
    if _STATE not in st.session_state:
        st.session_state[_STATE] = LinkState()
    return st.session_state[_STATE]


def parse_value(raw: list[str], current: Any) -> Any:
    """A URL parameter's values as the type of a widget's ``current`` value.

    Args:
        raw: the parameter's values (a repeated parameter gives several).
        current: the widget's value in the run before: bool, int, float, str, or a list/tuple of those.
    Returns:
        The value to put in session state.
    Raises:
        ValueError: the values do not fit that type.
    """
    if isinstance(current, (list, tuple)):
        values = [] if raw == [""] else raw
        kind = type(current[0]) if current else str
        parsed = [parse_value([v], kind()) for v in values]
        if isinstance(current, tuple):
            if len(parsed) != len(current):
                raise ValueError(f"expected {len(current)} values")
            return tuple(parsed)
        return parsed
    if len(raw) != 1:
        raise ValueError("expected one value")
    value = raw[0]
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "on", "yes"):
            return True
        if value.lower() in ("0", "false", "off", "no"):
            return False
        raise ValueError("expected 1 or 0")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("not a finite number")
        return number
    if isinstance(current, str):
        return value
    raise ValueError("this widget cannot travel in a link")


def format_value(value: Any) -> list[str]:
    """A widget value as URL parameter values (``parse_value``'s inverse)."""
    if isinstance(value, (list, tuple)):
        return [format_value(v)[0] for v in value] or [""]
    if isinstance(value, bool):
        return ["1" if value else "0"]
    if isinstance(value, float):
        return [repr(value)]
    return [str(value)]


def _simple(value: Any) -> bool:
    scalar = (bool, int, float, str)
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, scalar) for v in value)
    return isinstance(value, scalar)


def _widgets() -> dict[str, Any]:
    """The keyed widgets drawn in this run that can travel: user key -> widget metadata."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        session = ctx.session_state._state
        this_run = ctx.shared.widget_ids_this_run
        metadata = session._new_widget_state.widget_metadata
        mapping = dict(session._key_id_mapper._key_id_mapping)
    except (AttributeError, TypeError):  # Streamlit's internals moved: links carry the sidebar only
        return {}
    widgets = {}
    for key, widget_id in mapping.items():
        meta = metadata.get(widget_id)
        if key.startswith("_") or widget_id not in this_run or meta is None:
            continue
        if "trigger" in meta.value_type or "file_uploader" in meta.value_type:  # buttons, uploads, camera
            continue
        widgets[key] = meta
    return widgets


def _tokens() -> dict[str, str]:
    """Cache keys of the current model and image -> the token that stands for them in a URL key."""
    ctx = st.session_state.get("context")
    if ctx is None:
        return {}
    return {ctx.model_key: MODEL_TOKEN, ctx.image_key: IMAGE_TOKEN}


def url_name(key: str) -> str:
    """A widget key as a URL parameter name (the current model's and image's cache keys as tokens)."""
    for real, token in _tokens().items():
        if real:
            key = key.replace(real, token)
    return key


def widget_key(name: str) -> str:
    """A URL parameter name as a widget key (``url_name``'s inverse for the current model and image)."""
    for real, token in _tokens().items():
        name = name.replace(token, real)
    return name


def _in_range(meta: Any, value: Any) -> bool:
    """False for a slider value outside its range (a slider raises on one; other widgets fall back)."""
    serde = getattr(meta.serializer, "__self__", None)
    low, high = getattr(serde, "min_value", None), getattr(serde, "max_value", None)
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return True
    values = value if isinstance(value, (list, tuple)) else [value]
    return all(isinstance(v, (int, float)) and low <= v <= high for v in values)


def _apply_sidebar(state: LinkState) -> None:
    """Put the link's model, weights, image and presenter mode into session state (first run, before the sidebar)."""
    session = st.session_state
    if PRESENTER in state.pending:
        raw = state.pending.pop(PRESENTER)
        try:
            session[PRESENTER] = parse_value(raw, False)
        except ValueError:
            state.dropped.append(f"{PRESENTER}={raw[0] if raw else ''}")
    name = session.get("model_name")
    if MODEL in state.pending:
        wanted = state.pending.pop(MODEL)[-1]
        if wanted in MODEL_NAMES:
            session["model_name"] = name = wanted
        else:
            state.dropped.append(f"{MODEL}={wanted}")
            state.notes.append(f"This link names the model “{wanted}”, which this app does not have (a network trained "
                               "in another session cannot travel in a link).")
    if WEIGHTS in state.pending:
        wanted = state.pending.pop(WEIGHTS)[-1]
        model = name or default_model()  # the sidebar opens on it
        if wanted == "pretrained" and model and not pretrained_available(model):
            state.notes.append(f"This link shows {model} with its trained weights, which are not on this machine, so "
                               f"it opens with random weights. {missing_weights_hint(model)}")
            wanted = "random"
        if wanted in TRAVELLING_WEIGHTS and model:
            session[f"weights_{model}"] = wanted
        else:
            state.dropped.append(f"{WEIGHTS}={wanted}")
            if wanted == "uploaded":
                state.notes.append("This link was made with uploaded weights, which cannot travel in a link: "
                                   "upload the same file in the sidebar.")
    if IMAGE in state.pending:
        wanted = state.pending.pop(IMAGE)[-1]
        image = image_from_slug(wanted)
        if image is None:
            state.dropped.append(f"{IMAGE}={wanted}")
        else:
            session.update(gallery_choice=image, image_source="Gallery", _gallery_auto=False)


def before_run() -> None:
    """Call at the start of every script run, before the sidebar: reads a link on the session's first
    run and applies its values."""
    session = st.session_state
    first = _STATE not in session
    state = _state()
    if first:
        state.pending = {k: st.query_params.get_all(k) for k in st.query_params if k not in RESERVED}
        state.pending = {k: v for k, v in state.pending.items() if v}
        _apply_sidebar(state)
    state.applied = dict(state.to_apply)
    for key, value in state.to_apply.items():
        session[key] = value
    state.to_apply = {}


def _match_pending(state: LinkState, widgets: dict[str, Any]) -> None:
    """Move the pending values whose widgets this run drew into ``to_apply`` (typed and checked)."""
    session = st.session_state
    for name in list(state.pending):
        key = widget_key(name)
        if key not in widgets or SIDEBAR_KEYS.match(key):
            continue
        raw = state.pending.pop(name)
        try:
            value = parse_value(raw, session.get(key))
        except ValueError:
            state.dropped.append(f"{name}={','.join(raw)}")
            continue
        if not _in_range(widgets[key], value):
            state.dropped.append(f"{name}={','.join(raw)}")
            continue
        state.to_apply[key] = value
        state.from_url.add(key)


def before_compute() -> None:
    """Call before a heavy computation (``ui.cached`` on a miss): while a link's values wait for
    widgets this run has drawn, apply them now instead of computing with the defaults first."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx() is None:  # a worker thread, not a script run
        return
    state = st.session_state.get(_STATE)
    if state is None or not state.pending or state.rounds >= MAX_ROUNDS:
        return
    _match_pending(state, _widgets())
    if state.to_apply:
        state.rounds += 1
        st.rerun()


def _check_applied(state: LinkState) -> None:
    """Values a widget did not take (an option it lacks): say so."""
    session = st.session_state
    for key, value in state.applied.items():
        shown = session.get(key, value)
        if isinstance(value, (list, tuple)) and isinstance(shown, (list, tuple)):
            same = list(shown) == list(value)
        else:
            same = shown == value
        if not same:
            state.dropped.append(f"{url_name(key)}={','.join(format_value(value))}")
            state.from_url.discard(key)
    state.applied = {}


def current_params(widgets: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """The current view as query parameters (name -> values), for ``st.query_params`` and the link.

    Args:
        widgets: the keyed widgets of this run (``_widgets()`` when None).
    """
    session = st.session_state
    state = _state()
    params: dict[str, list[str]] = {}
    name = session.get("model_name")
    if name in MODEL_NAMES:
        params[MODEL] = [name]
        weights = session.get(f"weights_{name}")
        if weights in TRAVELLING_WEIGHTS:
            params[WEIGHTS] = [weights]
    if session.get("image_source", "Gallery") == "Gallery" and session.get("gallery_choice"):
        params[IMAGE] = [image_slug(session["gallery_choice"])]
    if session.get(PRESENTER):
        params[PRESENTER] = ["1"]
    widgets = _widgets() if widgets is None else widgets
    for key in sorted(widgets):
        if SIDEBAR_KEYS.match(key) or key not in session:
            continue
        value = session[key]
        if not _simple(value):
            continue
        if key not in state.baseline and key not in state.from_url:
            state.baseline[key] = value
        if key in state.from_url or value != state.baseline.get(key):
            params[url_name(key)] = format_value(value)
    return params


def what_cannot_travel() -> list[str]:
    """Sentences on what the current view uses that a link cannot carry (empty when it all travels)."""
    session = st.session_state
    notes = []
    name = session.get("model_name")
    if name not in MODEL_NAMES:
        notes.append(f"“{name}” was trained in this session: a link cannot carry it, so it opens on the default model.")
    elif session.get(f"weights_{name}") not in TRAVELLING_WEIGHTS:
        notes.append("Uploaded weights cannot travel in a link: whoever opens it must upload the same file.")
    source = session.get("image_source", "Gallery")
    if source != "Gallery":
        notes.append(f"The image comes from “{source}”, which cannot travel in a link: it opens on the default image.")
    return notes


def link_url(params: dict[str, list[str]]) -> str:
    """The full URL of this view: the page's address (``st.context.url``) and ``params``."""
    base = st.context.url or ""
    query = urlencode([(k, v) for k, values in params.items() for v in values])
    return f"{base}?{query}" if query else base


def after_run(slot: Any) -> None:
    """Call after the page ran (also when it stopped): finish applying a link, write the view's values
    to ``st.query_params`` and fill the sidebar's link panel ``slot`` (an ``st.sidebar.empty()``)."""
    state = _state()
    if state.to_apply:  # ``before_compute`` cut this run short to apply them
        st.rerun()
    widgets = _widgets()
    _check_applied(state)
    if state.pending and state.rounds < MAX_ROUNDS:
        _match_pending(state, widgets)
        if state.to_apply:
            state.rounds += 1
            st.rerun()
    if state.pending:  # no widget of this page takes them
        state.dropped.extend(f"{k}={','.join(v)}" for k, v in state.pending.items())
        state.pending = {}
    if state.dropped:
        st.toast("This link holds values this view cannot use here, so they were left out: "
                 + ", ".join(state.dropped[:12]) + ("…" if len(state.dropped) > 12 else ""), icon=":material/link_off:")
        state.dropped = []
    params = current_params(widgets)
    shown = {k: st.query_params.get_all(k) for k in st.query_params if k not in RESERVED}
    if shown != params:
        st.query_params.from_dict(params)
    _link_panel(slot, params, state)


def _link_panel(slot: Any, params: dict[str, list[str]], state: LinkState) -> None:
    with slot.container():
        with st.expander("Link to this view", icon=":material/link:"):
            st.caption("Copy this address (the button at its right) to open this page with these settings.")
            st.code(link_url(params), language=None, wrap_lines=True)
            for note in what_cannot_travel():
                st.warning(note, icon=":material/link_off:")
        for note in state.notes:
            st.warning(note, icon=":material/link_off:")


# ---------------------------------------------------------------- presenter mode
PRESENTER_CSS = """
<style>
html { font-size: 21px; }
[data-testid="stMainBlockContainer"] { max-width: 100% !important; padding-left: 2rem; padding-right: 2rem; }
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li { font-size: 1.15rem; }
[data-testid="stCaptionContainer"] { font-size: 1rem; }
[data-testid="stImage"] img { width: 100% !important; height: auto !important; }
</style>
"""
# Colour maps on a projector: darker darks, brighter brights than the defaults.
HIGH_CONTRAST = {"Viridis": "Turbo", "Inferno": "Hot", "RdBu_r": "Picnic"}


def presenter() -> bool:
    """Whether presenter mode is on in this session (before its toggle is drawn: the link's value)."""
    value = st.session_state.get(PRESENTER)
    if value is None and _STATE not in st.session_state:
        value = st.query_params.get(PRESENTER) in ("1", "true", "on", "yes")
    return bool(value)


def sidebar_state() -> str:
    """``initial_sidebar_state`` for ``st.set_page_config``: collapsed in presenter mode."""
    return "collapsed" if presenter() else "auto"


def presenter_toggle() -> None:
    """The sidebar's presenter-mode toggle, and its styling (CSS without any user input) when on."""
    st.sidebar.toggle("Presenter mode", key=PRESENTER,
                      help="Large fonts, figures at full width, high-contrast colour maps; the sidebar starts collapsed.")
    if st.session_state.get(PRESENTER):
        st.html(PRESENTER_CSS)


def colormap(name: str) -> str:
    """The colour map to draw with: ``name``, or its high-contrast counterpart in presenter mode."""
    return HIGH_CONTRAST.get(name, name) if st.session_state.get(PRESENTER) else name


def sidebar_panel() -> Any:
    """The sidebar's "Share" section: the presenter toggle and an empty slot ``after_run`` fills with the link."""
    st.sidebar.header("Share")
    presenter_toggle()
    return st.sidebar.empty()
