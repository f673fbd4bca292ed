"""Prepared URLs in a real browser: each opens in a fresh browser session on the real server and
restores its view (model, image, widget values; presenter mode's styling and collapsed sidebar),
the sidebar's link gives the same view back, no exception is shown and the server log stays clean."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from conftest import screenshot, serve_app, wait_for_app

TIMEOUT = 180_000
EXCEPTION = "[data-testid='stException']"
SALIENCY = ("saliency?model=small_cnn&weights=pretrained&image=digit-3&saliency_methods=vanilla+gradient"
            "&saliency_methods=Grad-CAM&saliency_samples=7&saliency_noise=0.3")
FILTERS = "filters?model=squeezenet1_1&weights=pretrained&image=cat&filters_layer=features.3.expand3x3&filters_sort=1"
PRESENTER = "activation_functions?act_fns=sigmoid&act_fns=ReLU&presenter=1"


def wait_quiet(page, text: str, timeout: float = TIMEOUT) -> None:
    """``wait_for_app`` for a page whose sidebar may be collapsed (its header is not visible)."""
    wait_for_app(page, text, timeout, sidebar=False)


def slider_value(page, label: str) -> float:
    """The value a slider shows on its thumb."""
    slider = page.locator("[data-testid='stSlider']").filter(has_text=label)
    return float(slider.locator("[data-testid='stSliderThumbValue']").first.inner_text())


def shown_link(page) -> dict[str, list[str]]:
    """The query of the URL the sidebar's "Link to this view" panel shows."""
    page.get_by_text("Link to this view").click()
    code = page.locator("[data-testid='stSidebar'] [data-testid='stCode']").first
    code.wait_for(timeout=TIMEOUT)
    return parse_qs(urlsplit(code.inner_text().strip()).query)


def test_prepared_urls_restore_their_views(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        with serve_app("streamlit_links") as url:
            page.goto(url)  # home first: st.navigation must have run once (see test_browser_inside)
            wait_for_app(page, timeout=TIMEOUT)

            page.goto(f"{url}/{SALIENCY}")
            wait_for_app(page, "digit 3", timeout=TIMEOUT)
            sidebar = page.locator("[data-testid='stSidebar']")
            assert sidebar.locator("[data-testid='stImageCaption']").first.inner_text().strip() == "digit 3"
            methods = page.locator("[data-testid='stMultiSelect']").filter(has_text="Methods")
            assert "vanilla gradient" in methods.inner_text() and "Grad-CAM" in methods.inner_text()
            assert "occlusion" not in methods.inner_text()  # a default method the link left out
            page.get_by_text("Method settings").click()
            assert slider_value(page, "SmoothGrad samples") == 7
            assert slider_value(page, "SmoothGrad noise (fraction of range)") == 0.3
            assert page.locator(".js-plotly-plot").count() == 2  # one colour bar per method
            assert "saliency_samples=7" in page.url and "image=digit-3" in page.url
            link = shown_link(page)
            assert link["saliency_methods"] == ["vanilla gradient", "Grad-CAM"] and link["saliency_samples"] == ["7"]
            assert page.locator(EXCEPTION).count() == 0
            screenshot(page, "links_saliency")

            page.goto(f"{url}/{FILTERS}")
            wait_for_app(page, "cat (scikit-image)", timeout=TIMEOUT)
            layer = page.locator("[data-testid='stSelectbox']").filter(has_text="Convolution layer")
            assert layer.locator("input").first.input_value() == "features.3.expand3x3"
            assert page.get_by_role("checkbox", name="Sort by L2 norm").is_checked()
            assert "squeezenet1_1" in sidebar.inner_text()
            assert page.locator(EXCEPTION).count() == 0
            screenshot(page, "links_filters")

            page.goto(f"{url}/{PRESENTER}")
            wait_quiet(page, "What am I looking at?")
            assert page.locator("[data-testid='stSidebar']").get_attribute("data-collapsed") == "true"
            font = page.evaluate("getComputedStyle(document.documentElement).fontSize")
            assert font == "21px", font  # presenter mode's CSS
            functions = page.locator("[data-testid='stMultiSelect']").filter(has_text="Functions")
            assert "sigmoid" in functions.inner_text() and "tanh" not in functions.inner_text()
            assert "presenter=1" in page.url
            assert page.locator(EXCEPTION).count() == 0
            screenshot(page, "links_presenter")
    finally:
        context.close()
