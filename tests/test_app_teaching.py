"""Issue 13's teaching defaults and honest words, checked with AppTest (see tests/test_app.py's note on
its quirk: one fresh AppTest per scenario, choices set through session state up front)."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from cnnviz import defaults
from cnnviz.layers import layer_table
from conftest import ROOT

SECTIONS = re.findall(r'^    "([^"]+)": \[', (ROOT / "app.py").read_text(), flags=re.M)


def new_app(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    for key, value in state.items():
        at.session_state[key] = value
    return at


@pytest.fixture()
def streamlit_warnings():
    """Warnings Streamlit logs (its loggers do not propagate), e.g. a widget whose default is also set
    through the Session State API."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler, logger = Keep(logging.WARNING), logging.getLogger("streamlit")
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("streamlit")]
    for each in {logger, *loggers}:
        each.addHandler(handler)
    import streamlit.elements.lib.policies as policies

    policies._shown_default_value_warning = False  # it warns once per process otherwise
    yield records
    for each in {logger, *loggers}:
        each.removeHandler(handler)


def test_home_lists_the_sections_of_the_navigation_and_links_every_page():
    at = new_app(model_name="small_cnn").run()
    assert not at.exception
    assert len(SECTIONS) >= 5
    intro = at.markdown[0].value
    for section in SECTIONS:
        assert f"**{section}**" in intro, section
    pages = re.findall(r'st\.Page\("pages/', (ROOT / "app.py").read_text())
    assert any(e.label == f"All {len(pages) - 1} pages" for e in at.expander)  # Home itself is not listed


def test_saliency_compare_mode_hides_the_methods_list():
    at = new_app(model_name="small_cnn").run()
    at.switch_page("pages/saliency.py").run()
    assert any(m.label == "Methods" for m in at.multiselect)
    at = new_app(model_name="small_cnn", saliency_compare=True).run()
    at.switch_page("pages/saliency.py").run()
    assert not at.exception, at.exception
    assert not any(m.label == "Methods" for m in at.multiselect)
    assert at.selectbox(key="saliency_compare_method").value in ("vanilla gradient", "Grad-CAM", "guided backprop",
                                                                 "occlusion", "SmoothGrad", "integrated gradients")


def test_pages_open_on_block_outputs_and_the_strongest_channel(small_cnn):
    chosen = defaults.teaching_layers(small_cnn.module, layer_table(small_cnn.module, small_cnn.input_size))
    at = new_app(model_name="small_cnn").run()
    at.switch_page("pages/deepdream.py").run()
    assert at.selectbox(key="dd_layer_small_cnn").value == chosen["dream"]
    at = new_app(model_name="small_cnn").run()
    at.switch_page("pages/saliency.py").run()
    assert not at.exception
    layer = chosen["feature"]
    assert at.selectbox(key="saliency_feature_layer_small_cnn|pretrained|").value == layer
    channel = next(n for n in at.number_input if n.label == "Channel")
    x = small_cnn.preprocessing(__import__("cnnviz.samples", fromlist=["x"]).load_sample(at.session_state["image_name"]))
    assert channel.value == defaults.strongest_channel(small_cnn.module, x, layer)


def test_class_visualization_opens_on_the_recommended_regularizers_and_bare_is_one_click_away(streamlit_warnings):
    at = new_app(model_name="small_cnn").run()
    at.switch_page("pages/class_visualization.py").run()
    assert not at.exception
    assert at.slider(key="cv_blur_every").value > 0 and at.slider(key="cv_clip_norm").value > 0
    assert at.slider(key="cv_jitter").value > 0
    at.button(key="cv_preset_bare").click().run()
    assert not at.exception
    assert [at.slider(key=k).value for k in ("cv_blur_every", "cv_clip_norm", "cv_clip_contribution", "cv_jitter")] == [0] * 4
    at.button(key="cv_preset_recommended").click().run()
    assert at.slider(key="cv_blur_every").value > 0
    assert not [r for r in streamlit_warnings if "Session State API" in r.getMessage()]


def test_embeddings_open_on_a_typical_digit_whose_neighbours_agree(streamlit_warnings):
    at = new_app(model_name="small_cnn").run()
    at.switch_page("pages/embeddings.py").run()
    assert not at.exception, at.exception
    l2 = next(m.value for m in at.markdown if m.value.startswith("**Feature space, L2**"))
    k = at.slider(key="embeddings_k").value
    assert f"{k} of {k} share the label" in l2
    at.number_input(key="embeddings_index").set_value(3).run()  # a student picks another image
    assert not at.exception
    assert not [r for r in streamlit_warnings if "Session State API" in r.getMessage()]


def test_an_upload_choice_without_a_file_keeps_the_last_model():
    at = new_app(model_name="small_cnn").run()
    assert not at.exception
    at.session_state["model_name"] = "resnet18"
    at.session_state["weights_resnet18"] = "uploaded"
    at.run()
    assert not at.exception
    assert not any("No model is loaded" in i.value for i in at.info)
    assert any("small_cnn" in s.value for s in at.subheader)  # the model card of the kept model


def test_an_unknown_page_name_is_reported(monkeypatch):
    import streamlit.runtime.scriptrunner as runner

    import ui

    pages = {"": [SimpleNamespace(url_path="")], "Look inside": [SimpleNamespace(url_path="filters")]}

    def context(name, page_hash=None):
        manager = SimpleNamespace(intended_page_name=name, intended_page_script_hash=page_hash)
        return lambda: SimpleNamespace(pages_manager=manager)

    monkeypatch.setattr(runner, "get_script_run_ctx", context("filtres"))
    assert ui.unknown_page(pages) == "filtres"
    monkeypatch.setattr(runner, "get_script_run_ctx", context("filters"))
    assert ui.unknown_page(pages) == ""
    monkeypatch.setattr(runner, "get_script_run_ctx", context(""))
    assert ui.unknown_page(pages) == ""
    monkeypatch.setattr(runner, "get_script_run_ctx", context("filtres", "abc"))  # a page picked by its hash
    assert ui.unknown_page(pages) == ""


def test_download_names_are_short_stable_and_differ_with_the_parameters():
    from ui.optimization import file_stem

    params = {"model": "squeezenet1_1", "layers": [f"features.{i}" for i in range(13)], "image": "x" * 300, "steps": 100}
    stem = file_stem("inversion_row", params)
    assert len(stem) < 60 and stem.startswith("inversion_row_squeezenet1_1_")
    assert file_stem("inversion_row", dict(reversed(list(params.items())))) == stem
    assert file_stem("inversion_row", {**params, "steps": 101}) != stem


def test_class_colours_are_okabe_ito_and_distinct_for_ten_digits():
    from cnnviz.display import OKABE_ITO, class_style

    styles = [class_style(i) for i in range(10)]
    assert len(set(styles)) == 10
    assert {c for c, _ in styles} <= set(OKABE_ITO)
    assert styles[0][0] == "#000000"  # the palest (yellow) comes last


CHANGED = ["pages/patches.py", "pages/deepdream.py", "pages/inversion.py", "pages/class_visualization.py",
           "pages/saliency.py", "pages/embeddings.py", "pages/live.py", "pages/home.py"]


@pytest.mark.parametrize("page", CHANGED)
@pytest.mark.parametrize("model", ["small_cnn", "resnet18"])
def test_pages_with_teaching_defaults_run_on_the_small_cnn_and_random_resnet(page, model):
    at = new_app(model_name=model).run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
