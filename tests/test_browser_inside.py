"""The four "Look inside" pages in a real browser with the small CNN on digits, offline."""

from __future__ import annotations

import re

from conftest import screenshot, wait_for_app


def _open(page, app_url: str, path: str) -> None:
    """Load the home page first: until app.py has run st.navigation once in this server, Streamlit
    serves a URL like /filters from the pages/ folder directly, without the app's sidebar."""
    page.goto(app_url)
    wait_for_app(page)
    page.goto(f"{app_url}/{path}")


def _no_error(page) -> None:
    assert page.query_selector("[data-testid='stException']") is None, page.inner_text("[data-testid='stException']")
    assert page.query_selector("[data-testid='stAlertContentError']") is None


def test_filters_page(page, app_url):
    _open(page, app_url, "filters")
    wait_for_app(page, "Filter norms")
    _no_error(page)
    assert page.get_by_text("16 of 16 filters, 3×3, gray").count() >= 1
    screenshot(page, "inside_filters")
    # replay training: the initialisation
    slider = page.get_by_role("slider", name="Training epoch")
    slider.focus()
    page.keyboard.press("Home")
    wait_for_app(page, "at initialisation (epoch 0)")
    _no_error(page)


def test_activations_page(page, app_url):
    _open(page, app_url, "activations")
    wait_for_app(page, "One channel, large")
    _no_error(page)
    assert page.get_by_text("feature maps, 32×32 each").count() >= 1
    page.get_by_text("No dead channel").first.wait_for() if page.get_by_text("No dead channel").count() else \
        page.get_by_text("are never positive").first.wait_for()
    assert page.get_by_text("over the image as the model sees it").count() >= 1
    screenshot(page, "inside_activations")


def test_patches_page(page, app_url):
    _open(page, app_url, "patches")
    # the default layer is the small CNN's middle block (cnnviz.defaults); its receptive field is exact
    page.get_by_text(re.compile(r"receptive field \d+×\d+ px, stride \d+ px \(exact\)")).first.wait_for(timeout=90_000)
    wait_for_app(page)
    _no_error(page)
    # the small CNN shows guided backprop by default: 12 patches, each with its unit's map beside it
    page.get_by_text("the guided backprop of that very unit").first.wait_for()
    images = page.query_selector_all("[data-testid='stMainBlockContainer'] [data-testid='stImage'] img")
    assert len(images) == 24
    screenshot(page, "inside_patches")
    sizes = {(round(b["width"]), round(b["height"])) for b in (img.bounding_box() for img in images)}
    assert len(sizes) == 1 and min(next(iter(sizes))) >= 100, sizes  # patch and map: same size, big enough to see


def test_embeddings_page(page, app_url):
    _open(page, app_url, "embeddings")
    wait_for_app(page, "Pixel space, L2")
    _no_error(page)
    page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=60_000)
    assert len(page.query_selector_all(".js-plotly-plot .scatterlayer .point")) == 500
    for title in ("Feature space, L2", "Feature space, cosine", "Pixel space, L2"):
        assert page.get_by_text(title).count() >= 1
    screenshot(page, "inside_embeddings")
    page.get_by_text("Pixel space, L2").first.scroll_into_view_if_needed()
    screenshot(page, "inside_embeddings_neighbours")
    page.get_by_text("Draw the images instead of dots").click()
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot .layer-above image", timeout=60_000)
    assert len(page.query_selector_all(".js-plotly-plot .layer-above image")) == 500
    page.get_by_text("Draw the images instead of dots").first.scroll_into_view_if_needed()
    screenshot(page, "inside_embeddings_thumbnails")
