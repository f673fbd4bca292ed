"""Streamlit helpers shared by the "Generate images" pages: run an optimisation stream with a live
preview, progress bar and Stop button, keep the image so far, draw the loss curve, offer downloads.

A page builds one params dict and a function returning ``cnnviz.synthesis.Step``s; ``stream`` does the
rest. Stop works because a button click reruns the script, which interrupts the running loop: the
latest step is kept in ``st.session_state`` as the loop runs and shown on the rerun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from cnnviz.display import pixels_to_array, png_bytes, upscale
from cnnviz.synthesis import OptimizationError, Step
from ui import admission
from ui.export import download_pair, file_stem  # noqa: F401 (file_stem: pages name their files with it)

DISPLAY_PX = 256
"""Images smaller than this are shown upscaled (nearest neighbour) so their pixels are visible."""


FIRST_VIEW_MAX_PARAMETERS = 5_000_000
"""First views are computed on light networks only (the small CNN, SqueezeNet, EfficientNet-Lite0):
on VGG or ResNet-50 one run with the defaults takes minutes on a CPU, so there the button starts it."""


@dataclass(frozen=True)
class Preview:
    """A quick first view for a page whose defaults take a minute (the Style pages on VGG-16): smaller,
    shorter settings that finish in a few seconds, shown until the button runs the page's own.

    Attributes:
        params: the preview's parameters (kept with its result, like a run's).
        make_steps: returns the preview's iterator of steps.
        note: what the caption says about it, e.g. "at 128 px and 40 steps".
    """

    params: dict
    make_steps: Callable[[], Iterator]
    note: str


def visible(pixels) -> np.ndarray:
    """Pixels (N, C, H, W) in [0, 1] -> uint8 image, upscaled (nearest) when small."""
    array = pixels_to_array(pixels)
    return upscale(array, DISPLAY_PX) if max(array.shape[:2]) < DISPLAY_PX else array


def buttons(key: str, label: str) -> tuple[bool, bool]:
    """The run and Stop buttons, side by side. Returns (run clicked, stop clicked)."""
    row = st.container(horizontal=True)  # buttons as wide as their labels, wrapping when the row is narrow
    run = row.button(label, key=f"{key}_run", type="primary", icon=":material/play_arrow:")
    stop = row.button("Stop", key=f"{key}_stop", icon=":material/stop:")
    return run, stop


def stream(
    key: str,
    params: dict,
    make_steps: Callable[[], Iterator],
    run: bool,
    show: Callable[[object, bool], None],
    step_of: Callable[[object], Step] = lambda item: item,
    describe: Callable[[object], str] = lambda step: f"step {step.step} of {step.total}",
    kept: str = "image",
    first_view: bool = False,
    preview: Preview | None = None,
) -> dict | None:
    """Run (when ``run``) or recall the optimisation kept under ``key``.

    Args:
        key: session-state key of this page's run.
        params: the parameters, kept with the result (for the caption, file names and sidecar).
        make_steps: returns the iterator of steps (called only when ``run``).
        run: the run button was clicked.
        show: ``show(item, live)`` draws one item of the iterator: the live preview (``live`` True; give
            charts keys that differ from the final ones) and, at the end, the result.
        step_of: the ``Step`` inside one item (for streams of (layer, Step) pairs); any object with
            ``step`` and ``total`` (done and planned, for the progress bar) will do.
        describe: where a step is, in words, for the progress bar and the "Stopped at ..." note.
        kept: what the note says is kept on Stop ("the image so far is kept").
        first_view: before the first run in this session on this model and image, show a result
            computed with the current (on a first visit: the page's default) parameters, once per
            model, image and parameters for every session (``ui.cached``); the button runs it again.
            Light networks only (``FIRST_VIEW_MAX_PARAMETERS``), unless ``preview`` is given.
        preview: with ``first_view``, compute the first view with these quicker settings instead.

    Returns:
        The kept state {"params", "last", "items", "status" ("done", "stopped", "error"), "error"},
        or None before the first run.
    """
    state = st.session_state.get(key)
    if run:
        state = {"params": params, "last": None, "items": {}, "status": "running", "error": None}
        st.session_state[key] = state
        progress = st.progress(0.0, text="Starting…")
        preview = st.empty()
        try:
            with admission.heavy("This run", progress) as checkpoint:  # a slot of the gate, in turns
                for item in make_steps():
                    step = step_of(item)
                    state["last"] = item
                    state["items"][_item_key(item)] = item
                    progress.progress(step.step / step.total, text=_capitalized(describe(step)))
                    with preview.container():
                        show(item, True)
                    checkpoint()
            state["status"] = "done"
        except (OptimizationError, ValueError, KeyError) as error:
            state["status"], state["error"] = "error", str(error).strip("'\"")
        progress.empty()
        preview.empty()
    if first_view and not run and not _belongs_here(state, params):
        quick = preview or Preview(params, make_steps, "")
        state = _first_view(key, quick, step_of, describe, any_size=preview is not None) or state
    if state is None:
        return None
    if not _belongs_here(state, params):
        return None  # a result belongs to the model that made it
    if state["status"] == "running":  # the script was interrupted by Stop (or another widget)
        state["status"] = "stopped"
    if state["status"] == "error":
        st.error(state["error"])
    if state["last"] is None:
        return state if state["status"] != "error" else None
    step = step_of(state["last"])
    if state["status"] == "stopped":
        st.info(f"Stopped at {describe(step)}; the {kept} so far is kept.")
    if state.get("first_view") and state.get("note"):
        st.caption(f"A quick first view, {state['note']}, made when the page opened (once per image, for "
                   "everyone); the button runs the settings above.")
    elif state["params"] != params:
        st.caption("The parameters changed since this result was made; press the button to run again.")
    elif state.get("first_view"):
        st.caption("A first view, made with these parameters when the page opened (once per model and image, "
                   "for everyone); the button runs it again.")
    show(state["last"], False)
    return state


def _where() -> tuple[str, str]:
    """The session's (model key, image key): what a first view was computed for."""
    ctx = st.session_state.get("context")
    return (ctx.model_key, ctx.image_key) if ctx is not None else ("", "")


def _belongs_here(state: dict | None, params: dict) -> bool:
    """Whether a kept run is this model's (and, for a first view, this image's too)."""
    if state is None or any(state["params"].get(k) != params.get(k) for k in ("model", "weights")):
        return False
    return not state.get("first_view") or state["first_view"] == _where()


def _first_view(key: str, quick: Preview, step_of: Callable[[object], Step], describe: Callable[[object], str],
                any_size: bool = False) -> dict | None:
    """The whole run of ``quick``, from the process-wide result cache (computed once per model, image
    and parameters), kept in the session like a finished run. None when it fails, or when the model
    is heavy and ``any_size`` is False."""
    import ui  # ui imports this module's users, not this module

    def compute(progress) -> tuple[object, dict] | None:
        last, items = None, {}
        try:
            for item in quick.make_steps():
                step = step_of(item)
                last, items[_item_key(item)] = item, item
                progress(step.step / step.total, describe(step))
        except (OptimizationError, ValueError, KeyError):
            return None
        return last, items

    ctx = st.session_state.get("context")
    if ctx is None or (not any_size and sum(p.numel() for p in ctx.model.module.parameters()) > FIRST_VIEW_MAX_PARAMETERS):
        return None
    where = _where()
    computed = ui.cached(("first_view", key, *where, json.dumps(quick.params, sort_keys=True, default=str)), compute,
                         "A first view with these parameters")
    if computed is None or computed[0] is None:
        return None
    state = {"params": quick.params, "last": computed[0], "items": dict(computed[1]), "status": "done", "error": None,
             "first_view": where, "note": quick.note}
    st.session_state[key] = state
    return state


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _item_key(item) -> str:
    return item[0] if isinstance(item, tuple) else ""


def loss_figure(history: tuple[dict[str, float], ...], terms: dict[str, str], title: str) -> go.Figure:
    """Loss curve: one panel per term, value against step.

    Args:
        history: ``Step.history``.
        terms: panel title -> key in the history dicts.
    """
    present = {label: key for label, key in terms.items() if history and key in history[0]}
    fig = make_subplots(rows=1, cols=max(1, len(present)), subplot_titles=list(present))
    steps = list(range(1, len(history) + 1))
    for col, (label, key) in enumerate(present.items(), start=1):
        fig.add_trace(go.Scatter(x=steps, y=[h[key] for h in history], mode="lines", name=label), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
        fig.update_yaxes(title_text="value", row=1, col=col)
    fig.update_layout(title=title, height=300, showlegend=False, margin=dict(l=10, r=10, t=60, b=10))
    return fig


def top5_chart(top: list[tuple[str, float]], title: str, key: str, height: int = 260) -> None:
    """Horizontal bars of (class, probability) pairs, most likely on top."""
    import pandas as pd
    import plotly.express as px

    frame = pd.DataFrame({"class": [c for c, _ in top], "probability": [p for _, p in top]})
    fig = px.bar(frame, x="probability", y="class", orientation="h", text_auto=".1%", range_x=[0, 1], title=title)
    fig.update_layout(yaxis={"autorange": "reversed", "type": "category"}, height=height, margin=dict(l=10, r=10, t=50, b=10))
    st.plotly_chart(fig, width="stretch", key=key)


def downloads(key: str, prefix: str, params: dict, pixels, extra: dict) -> None:
    """PNG download of ``pixels`` (native resolution) named by the parameters, and a JSON sidecar
    (``ui.export.download_pair``)."""
    download_pair(key, prefix, params, png_bytes(pixels_to_array(pixels)), extra)
