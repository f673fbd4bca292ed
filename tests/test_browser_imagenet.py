"""The app as a fresh clone opens it after `make run` fetched the package sources: on the trained
ImageNet SqueezeNet with the cat, in a real browser (Chromium via Playwright)."""

from __future__ import annotations

import pytest

from conftest import screenshot, serve_app, wait_for_app


@pytest.fixture(scope="module")
def imagenet_url():
    with serve_app("streamlit_imagenet", default_model=None) as url:
        yield url


def _no_error(page) -> None:
    assert page.query_selector("[data-testid='stException']") is None, page.inner_text("[data-testid='stException']")
    assert page.query_selector("[data-testid='stAlertContentError']") is None


def test_the_app_opens_on_squeezenet_which_calls_the_cat_a_cat(imagenet_url, page):
    page.goto(imagenet_url)
    wait_for_app(page, "Top prediction")
    try:
        _no_error(page)
        assert page.get_by_text("Top prediction: tiger cat").is_visible()
        assert page.get_by_text("squeezenet1_1 · ImageNet weights (ndf package)").first.is_visible()
        sidebar = page.locator("[data-testid='stSidebar']")  # the Weights choice says where from; it waits: in a
        sidebar.get_by_text("ImageNet (ndf package)").wait_for(state="visible", timeout=30_000)  # whole-suite run
    except Exception:  # the first visit of a fresh server once showed it a moment late
        screenshot(page, "imagenet_home_failed")  # where it stood: the assertion's message alone may not say
        raise
    screenshot(page, "imagenet_home")


def test_filters_of_a_3x3_first_layer_say_where_the_larger_patterns_are(imagenet_url, page):
    page.goto(imagenet_url)
    wait_for_app(page)
    page.goto(f"{imagenet_url}/filters")
    wait_for_app(page, "Filter norms")
    _no_error(page)
    assert page.get_by_text("64 of 64 filters, 3×3, RGB").count() >= 1
    assert page.get_by_text("colour blobs and simple gradients").is_visible()
    screenshot(page, "imagenet_filters")


def test_saliency_lands_on_the_cat(imagenet_url, page):
    page.goto(imagenet_url)
    wait_for_app(page)
    page.goto(f"{imagenet_url}/saliency")
    wait_for_app(page, "Why “tiger cat”?", timeout=180_000)
    _no_error(page)
    main = page.locator("[data-testid='stMain']")
    assert main.locator(".js-plotly-plot").count() == 4
    assert main.get_by_text("squeezenet1_1 · ImageNet weights (ndf package) · target tiger cat").count() == 4
    screenshot(page, "imagenet_saliency")
