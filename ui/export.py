"""Export of any result: a "Download PNG" button and, beside it, "Parameters (JSON)", a sidecar naming the
page, the model (key, name, weights), the image and the parameters that made the result.

One mechanism for every page: ``offer`` takes the result as an image, as model pixels or as a plotly
figure. kaleido (plotly's own PNG export) is not installed, so a figure is drawn again with matplotlib's
Agg canvas (no pyplot: safe beside other sessions' threads), only when the button is clicked; plotly's
toolbar still offers its own "Download plot as PNG" in the browser. The JSON of a figure also holds its
traces' data, so a plot can be redrawn elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from typing import Callable

import numpy as np
import streamlit as st
from PIL import Image

from cnnviz.display import pixels_to_array, png_bytes


def file_stem(prefix: str, params: dict) -> str:
    """A short file name (no extension) that is the same for the same parameters, e.g.
    ``classviz_small_cnn_1a2b3c4d``: the prefix, the model, and a digest of every parameter. The
    parameters themselves go in the JSON sidecar of the same name."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    model = re.sub(r"[^A-Za-z0-9_.-]+", "", str(params.get("model", "")))[:40]
    return "_".join(part for part in (prefix, model, digest) if part)


def current_page() -> str:
    """The URL path of the page this script run shows (``"filters"``; ``""`` for Home or outside a run)."""
    import ui
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    run = get_script_run_ctx()
    wanted = getattr(run, "page_script_hash", "") if run is not None else ""
    for section in ui.SECTIONS.values():
        for page in section:
            if page._script_hash == wanted:
                return page.url_path
    return ""


def view() -> dict:
    """Where a result was made: {"page", "model_key", "model", "weights", "image"} of this session."""
    ctx = st.session_state.get("context")
    where = {"page": current_page() or "home"}
    if ctx is not None:
        where.update(model_key=ctx.model_key, model=ctx.model.name, weights=ctx.model.weights, image=ctx.image_name)
    return where


def sidecar(params: dict, extra: dict | None = None) -> str:
    """The JSON sidecar: this session's ``view()``, then ``{"parameters": params}``, then ``extra``.

    Keys of ``view()`` sit beside "parameters"; an ``extra`` key of the same name (a page's "model"
    label) replaces it.
    """
    return json.dumps({**view(), "parameters": params, **(extra or {})}, indent=2, default=_plain)


def _plain(value):
    """JSON for what ``json`` cannot write itself: arrays and tensors as lists, the rest as text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def download_pair(key: str, prefix: str, params: dict, png: bytes | Callable[[], bytes], extra: dict | None = None,
                  label: str = "Download PNG") -> None:
    """A PNG download and, beside it, its JSON sidecar (``sidecar``); both named ``file_stem``.

    Args:
        png: the PNG's bytes, or a function returning them (called only when the button is clicked).
    """
    stem = file_stem(prefix, params)
    row = st.container(horizontal=True)  # full labels, wrapping when the row is narrow
    row.download_button(label, png, file_name=f"{stem}.png", mime="image/png", key=f"{key}_png", icon=":material/download:")
    row.download_button(
        "Parameters (JSON)", sidecar(params, extra), file_name=f"{stem}.json", mime="application/json", key=f"{key}_json",
        icon=":material/data_object:",
    )


def offer(key: str, prefix: str, params: dict, *, image=None, figure=None, extra: dict | None = None,
          label: str = "Download PNG") -> None:
    """Offer a result as "Download PNG" plus "Parameters (JSON)".

    Args:
        key: widget-key prefix (``{key}_png``, ``{key}_json``), unique on the page.
        prefix: the files' name prefix (``file_stem``).
        params: the page's parameters and slider values that made the result.
        image: the result as a PIL image, a (H, W[, C]) uint8 array, model pixels (N, C, H, W) in
            [0, 1] (the first is saved), or PNG bytes.
        figure: a plotly figure, when the result is a plot: its PNG is drawn with matplotlib on
            click, and its traces' data go in the JSON under "figure".
        extra: more keys for the JSON (what was measured, the model's label).
    """
    if (image is None) == (figure is None):
        raise ValueError("offer() takes an image or a figure")
    if figure is not None:
        extra = {**(extra or {}), "figure": figure_data(figure)}
        download_pair(key, prefix, params, lambda: figure_png(figure), extra, label)
    else:
        download_pair(key, prefix, params, image_png(image), extra, label)


def image_png(image) -> bytes:
    """PNG bytes of a PIL image, a uint8 (H, W[, C]) array, model pixels (N, C, H, W) in [0, 1], or PNG bytes."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, Image.Image):
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()
    if getattr(image, "ndim", 0) == 4:
        return png_bytes(pixels_to_array(image[:1]))
    return png_bytes(np.asarray(image))


def _values(trace, name: str) -> list:
    """A data array of a plotly trace object (``x``, ``y``, ``z``) as a list ([] when unset)."""
    value = getattr(trace, name, None)
    if value is None:
        return []
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _get(obj, name: str, default=None):
    """An attribute of a plotly object, ``default`` when unset."""
    try:
        value = obj[name]
    except (KeyError, ValueError):
        return default
    return default if value is None else value


def figure_data(figure) -> list[dict]:
    """Each trace of a plotly figure as {"type", "name", "x", "y"[, "z"]} (lists), for the JSON sidecar."""
    traces = []
    for trace in figure.data:
        entry = {"type": trace.type, "name": _get(trace, "name")}
        for axis in ("x", "y", "z"):
            if _get(trace, axis) is not None:
                entry[axis] = _values(trace, axis)
        traces.append(entry)
    return traces


def figure_png(figure, width_px: int = 1200, dpi: int = 110) -> bytes:
    """A plotly figure drawn again with matplotlib: scatter and line, bar, histogram and heatmap traces,
    each panel where the plotly layout puts it (its axes' domains), with the figure's and panels'
    titles. Returns PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = figure.layout
    traces = figure.data
    panels = sorted({_get(t, "xaxis", "x") for t in traces} or {"x"}, key=lambda a: int(a[1:] or 1))
    height_px = max(int(_get(layout, "height", 400)), 320)
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    titles = [a for a in _get(layout, "annotations", ()) if a.yref == "paper" and a.xref == "paper"]
    top = 1 - 60 / height_px if _text(layout.title.text) else 1 - 25 / height_px
    axes = {}
    for name in panels:
        suffix = name[1:]
        xaxis, yaxis = layout[f"xaxis{suffix}"], layout[f"yaxis{suffix}"]
        x0, x1 = _get(xaxis, "domain", (0, 1))
        y0, y1 = _get(yaxis, "domain", (0, 1))
        bottom, usable = 55 / height_px, top - 55 / height_px
        gap = 30 / height_px if len(panels) > 1 else 0  # room for the panel's title
        ax = fig.add_axes((0.06 + 0.92 * x0, bottom + usable * y0, 0.92 * (x1 - x0) - 0.04 * (x1 - x0 < 1),
                           max(usable * (y1 - y0) - gap, 0.05)))
        ax.set_xlabel(_text(xaxis.title.text), fontsize=8)
        ax.set_ylabel(_text(yaxis.title.text), fontsize=8)
        ax.tick_params(labelsize=7)
        if xaxis.type == "log":
            ax.set_xscale("log")
        if yaxis.type == "log":
            ax.set_yscale("log")
        if xaxis.range and xaxis.type != "log":
            ax.set_xlim(*xaxis.range)
        if yaxis.range and yaxis.type != "log":
            ax.set_ylim(*yaxis.range)
        near = [a for a in titles if x0 <= (a.x or -1) <= x1 and abs((a.y or -1) - y1) < 0.08]
        if near:
            ax.set_title(_text(near[0].text), fontsize=8)
        axes[name] = ax
    for trace in traces:
        ax = axes[_get(trace, "xaxis", "x")]
        kind = trace.type
        x, y, label = _values(trace, "x"), _values(trace, "y"), _get(trace, "name")
        if kind == "heatmap":
            z = np.asarray(_values(trace, "z"), dtype=float)
            shown = ax.imshow(z, cmap="viridis", aspect="auto", vmin=_get(trace, "zmin"), vmax=_get(trace, "zmax"))
            fig.colorbar(shown, ax=ax)
        elif kind == "bar":
            horizontal = _get(trace, "orientation") == "h"
            cats, vals = (y, x) if horizontal else (x, y)
            cats = cats or list(range(len(vals)))
            positions = range(len(cats))
            (ax.barh if horizontal else ax.bar)(positions, vals, label=label, alpha=0.7)
            if len(cats) <= 40:
                (ax.set_yticks if horizontal else ax.set_xticks)(positions, [str(c) for c in cats], fontsize=7)
            if horizontal:
                ax.invert_yaxis()
        elif kind in ("scatter", "scattergl"):
            x = x or list(range(len(y)))
            mode = _get(trace, "mode", "lines")
            colour = next((c for c in (trace.line.color, trace.marker.color) if isinstance(c, str)), None)
            if "lines" in mode:
                ax.plot(x, y, label=label, color=colour, linewidth=1.2)
            else:
                ax.scatter(x, y, s=10, label=label, color=colour, alpha=0.8)
        elif kind == "histogram":
            ax.hist(x or y, bins=60, label=label, alpha=0.8)
    for name, ax in axes.items():
        named = [t for t in traces if _get(t, "xaxis", "x") == name and _get(t, "name")]
        if len(named) > 1 and layout.showlegend is not False:
            ax.legend(fontsize=7)
    fig.suptitle(_text(layout.title.text), fontsize=10)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _text(title) -> str:
    """A plotly title (a string or {"text": ...}) as plain text."""
    if isinstance(title, dict):
        title = title.get("text")
    return re.sub(r"<[^>]+>", " ", str(title or "")).strip()
