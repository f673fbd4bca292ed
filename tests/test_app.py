"""AppTest smoke tests: the app and every registered page run without an exception."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from cnnviz.models import MODEL_NAMES
from conftest import ROOT

PAGE_FILES = re.findall(r'st\.Page\("(pages/[\w]+\.py)"', (ROOT / "app.py").read_text())


def new_app(**state) -> AppTest:
    """A fresh AppTest; sidebar choices are set through session state before the first run.

    AppTest resets Streamlit's "is there a pages/ folder" flag before every run, so from its second
    run on it treats the app as an old-style multipage app and drops the sidebar's elements from its
    tree (the script still runs). Hence one fresh AppTest per scenario, choices set up front; the
    real server is covered by the browser tests (tests/test_browser_*.py).
    """
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def test_every_page_file_is_registered():
    on_disk = sorted(f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py") if not p.name.startswith("_"))
    assert sorted(PAGE_FILES) == on_disk


def test_the_app_opens_on_the_trained_squeezenet_and_calls_the_cat_a_cat():
    at = new_app().run()  # `make test` fetched the package weights, as `make run` does
    assert not at.exception and not at.error
    assert at.session_state["model_name"] == "squeezenet1_1"
    assert at.session_state["image_name"] == "cat (scikit-image)"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Parameters": "1,235,496", "Layers (modules)": "67", "Classes": "1000"}
    assert at.markdown[-1].value.startswith("Top prediction:") and "cat" in at.markdown[-1].value
    assert any("ImageNet weights (ndf package)" in s.value for s in at.subheader)
    assert not at.warning  # trained weights: no "random weights" warning


def test_without_the_package_weights_the_app_opens_on_the_small_cnn_with_a_digit(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CACHE", str(tmp_path))  # nothing fetched
    at = new_app().run()
    assert not at.exception and not at.error
    assert at.session_state["model_name"] == "small_cnn"
    assert at.session_state["image_name"].startswith("digit")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Parameters": "36,858", "Layers (modules)": "14", "Classes": "10"}
    assert any("fetch" in t.value for t in at.toast)


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n != "small_cnn"])
def test_home_renders_the_layer_table_and_top5_for_every_zoo_model(name):
    at = new_app(model_name=name).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert len(table) > 10 and table["parameters"].max() > 0
    if name == "vgg16_features":  # convolutions only: said plainly, no top-5
        assert any("no classifier" in i.value for i in at.info)
        assert at.metric[2].value == "none (features only)"
        return
    assert at.markdown[-1].value.startswith("Top prediction:")
    assert at.metric[2].value == "1000"


@pytest.mark.parametrize("page", ["pages/saliency.py", "pages/adversarial.py"])
def test_pages_that_need_classes_say_so_for_vgg16_features_and_offer_another_model(page):
    at = new_app(model_name="vgg16_features").run()
    at.switch_page(page).run()
    assert not at.exception and not at.error
    assert any("no classifier" in i.value for i in at.info)
    switch = at.button(key="switch_to_classifier")
    assert "squeezenet1_1" in switch.label
    switch.click().run()
    assert not at.exception and at.session_state["model_name"] == "squeezenet1_1"


@pytest.mark.parametrize("page", ["pages/filters.py", "pages/activations.py", "pages/patches.py", "pages/deepdream.py",
                                  "pages/inversion.py", "pages/class_visualization.py"])
def test_feature_pages_work_on_vgg16_features(page):
    at = new_app(model_name="vgg16_features").run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_home_with_random_resnet18_is_labelled_and_uses_a_photo():
    at = new_app(model_name="resnet18").run()
    assert not at.exception and not at.error
    assert at.session_state["image_name"] == "cat (scikit-image)"
    assert any("Random weights" in w.value for w in at.warning)
    assert any("random weights" in s.value for s in at.subheader)


def test_missing_pretrained_weights_are_hidden_with_the_reason_and_the_fix(tmp_path):
    import torch

    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        at = new_app(model_name="vgg16", weights_vgg16="pretrained").run()
    finally:
        torch.hub.set_dir(previous)
    assert not at.exception
    # the choice that cannot work is hidden, the sidebar says why and how to fix it, and the pages still show
    # something (random VGG-16), never "No model is loaded" everywhere
    weights = at.sidebar.radio(key="weights_vgg16")
    assert weights.options == ["Random weights", "Upload a weights file"] and weights.value == "random"
    assert any("python -m cnnviz fetch vgg16" in c.value and "not offered" in c.value for c in at.sidebar.caption)
    assert not any("No model is loaded" in i.value for i in at.info)
    assert any("Random weights" in w.value for w in at.warning)


@pytest.mark.parametrize("page", PAGE_FILES)
def test_every_page_runs_with_the_default_model(page):
    at = new_app().run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(e.label == "What am I looking at?" for e in at.expander), "every page explains itself"


def test_the_library_never_imports_streamlit():
    import subprocess
    import sys

    code = "import sys, cnnviz, pkgutil, importlib\n" \
           "[importlib.import_module(f'cnnviz.{m.name}') for m in pkgutil.iter_modules(cnnviz.__path__)]\n" \
           "print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("mode, first_order", [("fast preview", True), ("exact", False)])
def test_saliency_occlusion_modes_say_how_the_map_was_computed(mode, first_order):
    at = new_app(model_name="small_cnn", saliency_methods=["occlusion"], saliency_occlusion_mode=mode).run()
    at.switch_page("pages/saliency.py").run()
    assert not at.exception and not at.error
    notes = [c.value for c in at.caption if "incremental inference" in c.value]
    assert len(notes) == 1 and ("first-order" in notes[0]) == first_order, [c.value for c in at.caption]
