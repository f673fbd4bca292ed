"""The "Generate images" pages: in AppTest (every page runs its main button with few steps) and in a
real browser with the small CNN (each page's main button, a Stop, screenshots under artifacts/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import screenshot, wait_for_app

APP = str(Path(__file__).resolve().parent.parent / "app.py")

PAGES = [
    # page, run button key, quick settings
    ("class_visualization", "cv", {"cv_steps": 5}),
    ("adversarial", "adv", {"adv_steps": 3}),
    ("inversion", "inv", {"inv_steps": 10}),
    ("inversion", "inv_row", {"inv_steps": 10}),
    ("deepdream", "dd", {"dd_steps": 2, "dd_octaves": 2}),
]


def _open(page: str, model: str = "small_cnn") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_name"] = model
    if model != "small_cnn":
        at.session_state[f"weights_{model}"] = "random"
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("page,key,settings", PAGES, ids=[f"{p}-{k}" for p, k, _ in PAGES])
def test_page_generates_in_apptest(page, key, settings):
    at = _open(page)
    for name, value in settings.items():
        at.slider(key=name).set_value(value)
    at.button(key=f"{key}_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    if key != "inv_row":
        assert at.get("download_button"), "no download button after the run"
        labels = [b.proto.label for b in at.get("download_button")]
        assert "Download PNG" in labels and "Parameters (JSON)" in labels
    # the result is kept across reruns (e.g. after a click elsewhere)
    at.run()
    assert not at.exception


def test_class_page_neuron_mode():
    at = _open("class_visualization")
    at.radio(key="cv_mode").set_value("A channel or unit of a layer").run()
    at.slider(key="cv_steps").set_value(5)
    at.checkbox(key="cv_unit").check()
    at.button(key="cv_run").click().run()
    assert not at.exception and not at.error


def test_adversarial_page_targeted_shows_both_predictions():
    at = _open("adversarial")
    at.checkbox(key="adv_targeted").check().run()
    at.selectbox(key="adv_target_small_cnn").set_value("0")
    at.slider(key="adv_epsilon").set_value(48)
    at.slider(key="adv_steps").set_value(20)
    at.button(key="adv_run").click().run()
    assert not at.exception and not at.error
    assert any("reach '0'" in s.value for s in at.success), [w.value for w in at.warning]


# --- real browser -----------------------------------------------------------------------------

BROWSER_PAGES = [
    ("class_visualization", "Generate"),
    ("adversarial", "Attack"),
    ("inversion", "Invert"),
    ("deepdream", "Dream"),
]


def _goto(page, app_url: str, path: str) -> None:
    """Home first: until app.py has run st.navigation once in this server, Streamlit serves /path from
    the pages/ folder directly, without the app's sidebar."""
    page.goto(app_url)
    wait_for_app(page)
    page.goto(f"{app_url}/{path}")


@pytest.mark.parametrize("path,button", BROWSER_PAGES)
def test_page_in_browser(page, app_url, path, button):
    _goto(page, app_url, path)
    wait_for_app(page, "What am I looking at?")
    page.get_by_role("button", name=button, exact=True).first.click()
    page.get_by_text("Download PNG").first.wait_for(timeout=120_000)
    wait_for_app(page)
    assert page.get_by_text("Traceback").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stImage']").count() >= 1
    if path == "class_visualization":
        page.get_by_text("trained on MNIST").first.wait_for()  # the model label is in the caption
    page.locator("[data-testid='stImage']").last.scroll_into_view_if_needed()
    screenshot(page, f"generate_{path}")


def test_stop_keeps_the_image_so_far(page, app_url):
    _goto(page, app_url, "inversion")
    wait_for_app(page, "What am I looking at?")
    steps = page.get_by_role("slider", name="Steps")
    steps.focus()
    page.keyboard.press("End")  # the most steps, so the run is still going when Stop is pressed
    wait_for_app(page)
    page.get_by_role("button", name="Invert the row", exact=True).click()
    page.get_by_text(re.compile(r"Step \d+ of \d+")).first.wait_for(timeout=60_000)
    page.get_by_role("button", name="Stop").nth(1).click()
    page.get_by_text("Stopped at step").first.wait_for(timeout=60_000)
    wait_for_app(page)
    assert page.locator("[data-testid='stImage']").count() >= 2
    page.get_by_text("Stopped at step").first.scroll_into_view_if_needed()
    screenshot(page, "generate_inversion_stopped")
