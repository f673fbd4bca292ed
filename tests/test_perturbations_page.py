"""The "Smallest & universal perturbations" page: in AppTest (DeepFool with the ε bisection, a short universal
perturbation, transfer on an ImageNet model) and in a real browser with screenshots of v and of the
before/after grid."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from conftest import screenshot, wait_for_app

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/perturbations.py"


def _open(model: str = "small_cnn", **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model_name"] = model
    if model != "small_cnn":
        at.session_state[f"weights_{model}"] = "random"
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def test_deepfool_and_a_short_universal_perturbation_on_the_small_cnn():
    at = _open(uap_train=20, uap_held=20, uap_passes=1)
    at.button(key="df_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("→" in s.value and "L2 norm" in s.value for s in at.success), [w.value for w in at.warning]
    at.button(key="uap_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download PNG (v amplified)" in labels and "Download v (safetensors)" in labels
    metrics = {m.label: m.value for m in at.metric}
    assert any(label.startswith("Held-out images") for label in metrics), metrics
    assert "Random noise of the same norm" in metrics
    at.run()  # the result is kept across reruns
    assert not at.exception


def test_universal_on_gallery_crops_with_transfer():
    at = _open("mobilenet_v3_small", uap_train_crops=4, uap_held_crops=4, uap_passes=1, uap_xi=16)
    at.button(key="uap_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("small sample" in c.value for c in at.caption)
    at.selectbox(key="uap_other").set_value("resnet18")
    at.button(key="uap_transfer").click().run()
    assert not at.exception, at.exception
    assert any("fooled on resnet18" in m.label for m in at.metric), [m.label for m in at.metric]


def _goto(page, app_url: str, path: str) -> None:
    page.goto(app_url)
    wait_for_app(page)
    page.goto(f"{app_url}/{path}")


def test_page_in_browser(page, app_url):
    _goto(page, app_url, "perturbations")
    wait_for_app(page, "What am I looking at?")
    page.get_by_role("button", name="Find the smallest change").click()
    # the result's sentence (the explainer, collapsed, also says "L2 norm")
    page.locator("[data-testid='stAlert']").filter(has_text="L2 norm").first.wait_for(timeout=120_000)
    wait_for_app(page)
    page.get_by_text("The smallest change that fools it").first.scroll_into_view_if_needed()
    screenshot(page, "perturbations_deepfool")
    for label in ("Digits to compute on", "Held-out digits"):
        box = page.get_by_label(label)
        box.fill("100")
        box.press("Enter")
        wait_for_app(page)
    passes = page.get_by_role("slider", name="Most passes")
    passes.focus()
    page.keyboard.press("Home")  # one pass
    wait_for_app(page)
    page.get_by_role("button", name="Compute the universal perturbation").click()
    page.get_by_text("Download v (safetensors)").first.wait_for(timeout=300_000)
    wait_for_app(page)
    assert page.get_by_text("Traceback").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0
    page.get_by_text("One perturbation that fools it").first.scroll_into_view_if_needed()
    screenshot(page, "perturbations_universal")
