"""Every page that shows a result offers it as "Download PNG" plus "Parameters (JSON)" (``ui.export``):
the PNG decodes to a picture, and the JSON parses and names the page, the model, the image and the
page's current parameters (read back from its widgets after a change, so a stale sidecar fails).

The files are caught where Streamlit's server would store them (its media file manager), so the test
reads exactly what a student's browser would download; a plot's PNG, drawn only on click, is drawn here
by calling the deferred function the button would call."""

from __future__ import annotations

import io
import json

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from conftest import ROOT


@pytest.fixture()
def served(monkeypatch) -> dict[str, object]:
    """File name -> what the download button serves (bytes or str; a function for a deferred file)."""
    files: dict[str, object] = {}
    add, add_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def spy_add(self, data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        if file_name:
            files[file_name] = data
        return add(self, data, mimetype, coordinates, file_name, is_for_static_download)

    def spy_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        if file_name:
            files[file_name] = data_callable
        return add_deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", spy_add)
    monkeypatch.setattr(MediaFileManager, "add_deferred", spy_deferred)
    return files


def _open(page: str, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["model_name"] = "small_cnn"
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _latest(files: dict, prefix: str) -> tuple[dict, Image.Image]:
    """The last JSON sidecar whose name starts with ``prefix`` (the files of the latest run), and its PNG."""
    names = [n for n in files if n.startswith(prefix + "_") and n.endswith(".json")]
    assert names, f"no {prefix}_*.json download among {sorted(files)}"
    json_name = names[-1]
    png_name = json_name[: -len(".json")] + ".png"
    assert png_name in files, f"no PNG beside {json_name}"
    sidecar = json.loads(files[json_name])
    png = files[png_name]
    png = png() if callable(png) else png
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    image.load()
    return sidecar, image


def _where(at: AppTest, sidecar: dict, page: str) -> None:
    """The sidecar names this page and this session's model and image."""
    assert sidecar["page"] == page
    assert sidecar["model_key"] == at.session_state["context"].model_key
    assert sidecar["model"] == "small_cnn" and sidecar["weights"]
    assert sidecar["image"] == at.session_state["image_name"]


def _no_errors(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_activations_export_follows_the_layer_and_the_scale(served):
    at = _open("activations")
    layers = at.selectbox(key="activations_layer").options
    at.selectbox(key="activations_layer").set_value(layers[0])
    at.checkbox(key="activations_shared").check().run()
    _no_errors(at)
    sidecar, image = _latest(served, "activations")
    _where(at, sidecar, "activations")
    assert sidecar["parameters"]["layer"] == layers[0] and sidecar["parameters"]["shared_scale"] is True
    shown = sidecar["parameters"]["channels_shown"]
    assert shown == sidecar["channels"] or shown == 256  # the grid holds every channel up to 256
    assert min(image.size) > 32


def test_filters_export_holds_the_norms_in_the_order_drawn(served):
    at = _open("filters")
    at.checkbox(key="filters_sort").check().run()
    _no_errors(at)
    sidecar, image = _latest(served, "filters")
    _where(at, sidecar, "filters")
    params = sidecar["parameters"]
    assert params["layer"] == at.selectbox(key="filters_layer").value and params["sort_by_norm"] is True
    norms = np.asarray(sidecar["filter_norms"])[sidecar["filter_order"]]
    assert len(norms) > 1 and np.all(np.diff(norms) <= 1e-6)  # sorted: strongest first, as drawn
    assert image.mode in ("RGB", "L") and min(image.size) > 16


def test_patches_export_has_k_tiles_and_their_images(served):
    at = _open("patches")
    at.slider(key="patches_k").set_value(4).run()
    _no_errors(at)
    sidecar, image = _latest(served, "patches")
    _where(at, sidecar, "patches")
    assert sidecar["parameters"]["k"] == 4 and len(sidecar["hits"]) == 4
    values = [h["activation"] for h in sidecar["hits"]]
    assert values == sorted(values, reverse=True)  # strongest first, like the page
    assert image.width > image.height  # one row of tiles


@pytest.mark.parametrize("page,key,widget,value,param", [
    ("activation_functions", "activations_fx", "act_range", 3.0, "range"),
    ("preprocessing", "point_cloud", "prep_points", 100, "points"),
    ("initialization", "initialisation", "init_depth", 3, "depth"),
])
def test_plot_pages_export_the_plot_drawn_again_and_its_data(served, page, key, widget, value, param):
    at = _open(page)
    at.slider(key=widget).set_value(value).run()
    _no_errors(at)
    sidecar, image = _latest(served, key)
    assert sidecar["page"] == page
    assert sidecar["parameters"][param] == value
    assert sidecar["figure"] and all("type" in trace for trace in sidecar["figure"])
    assert image.width >= 1000 and image.height >= 300
    pixels = np.asarray(image.convert("L"))
    assert (pixels < 128).mean() > 0.002  # something is drawn on the white canvas
    if page == "initialization":
        assert len(sidecar["per_layer"]) == 3
    if page == "preprocessing":  # the cloud's first stage, as plotted
        assert len(sidecar["figure"][0]["x"]) == 100


def test_home_exports_the_top5_it_shows(served):
    at = _open("home")
    _no_errors(at)
    sidecar, _ = _latest(served, "top5")
    _where(at, sidecar, "home")
    shown = at.markdown[-1].value  # "Top prediction: **7** (98.0%)"
    assert f"**{sidecar['top5'][0][0]}**" in shown
    assert [t["y"] for t in sidecar["figure"]][0] == [c for c, _ in sidecar["top5"]]


def test_embeddings_export_holds_every_point(served):
    at = _open("embeddings")
    at.radio(key="embeddings_method").set_value("PCA").run()
    _no_errors(at)
    sidecar, _ = _latest(served, "embeddings")
    _where(at, sidecar, "embeddings")
    assert sidecar["parameters"]["method"] == "PCA"
    assert len(sidecar["points"]) == len(sidecar["labels"]) >= 5
    assert sum(len(trace["x"]) for trace in sidecar["figure"]) == len(sidecar["points"])


def test_deepfool_export_after_the_run(served):
    at = _open("perturbations")
    at.slider(key="df_iter").set_value(20)
    at.button(key="df_run").click().run()
    _no_errors(at)
    sidecar, image = _latest(served, "deepfool")
    _where(at, sidecar, "perturbations")
    assert sidecar["parameters"]["max_iter"] == 20 and sidecar["steps"] <= 20
    assert image.size == (32, 32)  # native resolution of the small CNN's input


def test_figure_png_places_subplots_and_reads_plotly_typed_arrays():
    from plotly.subplots import make_subplots

    from ui.export import figure_data, figure_png

    fig = make_subplots(rows=1, cols=2, subplot_titles=["left", "right"])
    fig.add_trace(go.Scatter(x=np.arange(3), y=np.array([0.0, 1.0, 0.0]), mode="lines"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=np.eye(4)), row=1, col=2)
    data = figure_data(fig)
    assert data[0]["y"] == [0.0, 1.0, 0.0] and data[1]["z"] == np.eye(4).tolist()
    image = np.asarray(Image.open(io.BytesIO(figure_png(fig))).convert("L"))
    left, right = image[:, : image.shape[1] // 2], image[:, image.shape[1] // 2 :]
    assert (left < 128).mean() > 0.001 and (right < 128).mean() > 0.01  # both panels drawn, each on its side


def test_gram_export_holds_the_matrix_it_shows(served):
    at = _open("style_gram")
    at.toggle(key="gram_corr").set_value(True).run()
    _no_errors(at)
    sidecar, image = _latest(served, "gram")
    assert sidecar["page"] == "style_gram" and sidecar["parameters"]["correlation"] is True
    assert sidecar["parameters"]["layer"] == at.selectbox(key="gram_layer").value
    z = np.asarray(sidecar["figure"][0]["z"])
    channels = sidecar["feature_shape"][0]
    diagonal = np.diag(z)  # correlations: 1 on the diagonal, 0 for a channel silent on this image
    assert z.shape == (channels, channels) and np.all(np.isclose(diagonal, 1.0, atol=1e-4) | (diagonal == 0))
    assert np.isclose(diagonal, 1.0, atol=1e-4).sum() > channels // 4
    assert image.width >= 1000
