"""First views of the Generate pages: on opening, a result made with the page's defaults, computed once
per model and image and shared by every session through the result cache; the button still runs it."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from cnnviz.style.gatys import GATYS_SIZE, GATYS_STEPS, TEXTURE_SIZE, TEXTURE_STEPS
from conftest import ROOT

GENERATE = [("pages/class_visualization.py", "cv_result"), ("pages/adversarial.py", "adv_result"),
            ("pages/inversion.py", "inv_result"), ("pages/deepdream.py", "dd_result")]


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["model_name"] = "small_cnn"
    at.run()
    return at.switch_page(page).run()


@pytest.mark.parametrize("page,key", GENERATE, ids=lambda v: v.split("/")[-1].removesuffix(".py"))
def test_a_generate_page_opens_on_a_result_shared_by_every_session(page, key):
    first = open_page(page)
    assert not first.exception, first.exception
    state = first.session_state[key]
    assert state["status"] == "done" and state["last"] is not None and state["first_view"]
    assert any("A first view" in c.value for c in first.caption)
    assert any(b.label in ("Generate", "Attack", "Invert", "Dream") for b in first.button)  # it runs again
    second = open_page(page)  # another student: the same object from the cache, not a second run
    assert second.session_state[key]["last"] is state["last"]


def test_no_first_view_on_a_heavy_network():
    """On VGG a run with the defaults takes minutes on a CPU: the page waits for the button."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["model_name"] = "vgg16_features"
    at.run()
    at.switch_page("pages/deepdream.py").run()
    assert not at.exception
    assert "dd_result" not in at.session_state


DEFAULTS = {"tex_result": (TEXTURE_SIZE, TEXTURE_STEPS), "gatys_result": (GATYS_SIZE, GATYS_STEPS)}


@pytest.mark.parametrize("page,key,button", [("pages/style_texture.py", "tex_result", "Synthesise the row"),
                                             ("pages/style_gatys.py", "gatys_result", "Transfer the style")],
                         ids=["texture", "gatys"])
def test_a_style_page_opens_on_a_quick_preview(page, key, button):
    """The Style pages' defaults take about a minute of VGG-16: they open on a smaller, shorter run of
    the same method (seconds), shared through the cache, and say so; the button runs the defaults."""
    first = open_page(page)
    assert not first.exception, first.exception
    state = first.session_state[key]
    assert state["status"] == "done" and state["first_view"] and state["note"]
    kept = state["params"]
    assert kept["size"] * kept["steps"] < DEFAULTS[key][0] * DEFAULTS[key][1]  # smaller or shorter than the defaults
    assert any("A quick first view" in c.value for c in first.caption)
    assert any(b.label == button for b in first.button)
    second = open_page(page)
    assert second.session_state[key]["last"] is state["last"]
