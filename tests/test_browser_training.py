"""The "Training" pages in a real browser: the lecture's initialisation figures, a CNN training live
in the background (curves refreshed by the page's fragment, Stop), and the trained network used by
the Filters page in the same session."""

from __future__ import annotations

import os
import re
import time

import pytest

from conftest import open_by_link, screenshot, serve_app, wait_for_app

DIGITS = "digits (scikit-learn, 1,797)"


@pytest.fixture(scope="module")
def app_url():
    """This module's own server, with one intra-op thread: the tests check the pages, not the speed,
    and on a shared, oversubscribed CPU two threads made training 10-100× slower."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        with serve_app("streamlit_training") as url:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS")
            else:
                os.environ["OMP_NUM_THREADS"] = previous
            yield url
    finally:
        if previous is not None:
            os.environ["OMP_NUM_THREADS"] = previous


def _open(page, app_url: str, path: str, text: str) -> None:
    page.goto(app_url)
    wait_for_app(page)
    page.goto(f"{app_url}/{path}")
    wait_for_app(page, text)


def _no_error(page) -> None:
    assert page.query_selector("[data-testid='stException']") is None, page.inner_text("[data-testid='stException']")


def _choose(page, label: str, option: str, scope: str = "[data-testid='stMain']") -> None:
    box = page.locator(f"{scope} [data-testid='stSelectbox']").filter(has_text=label).first
    box.locator("input").click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()


def _slider_to(page, label: str, key: str) -> None:
    slider = page.locator(f"input[type='range'][aria-label='{label}']")
    slider.wait_for()
    slider.focus()
    page.keyboard.press(key)


def test_initialisation_page_shows_the_lectures_figures(page, app_url):
    _open(page, app_url, "initialization", "Activations per layer")
    _no_error(page)
    assert page.get_by_text("The activations collapse").count() == 1  # tanh, N(0, 0.01²)
    screenshot(page, "training_init_sigma_0.01")
    page.get_by_text("relu", exact=True).click()
    wait_for_app(page)
    page.get_by_text("Kaiming (MSRA)", exact=True).click()
    wait_for_app(page, "Healthy")
    _no_error(page)
    screenshot(page, "training_init_kaiming_relu")


def test_activation_functions_and_preprocessing_pages(page, app_url):
    _open(page, app_url, "activation_functions", "Why zero-centred outputs matter")
    _no_error(page)
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
    assert page.locator(".js-plotly-plot").count() == 2
    screenshot(page, "training_activation_functions")
    _open(page, app_url, "preprocessing", "Mean image of")
    _no_error(page)
    screenshot(page, "training_preprocessing")


def test_train_live_then_use_the_network_on_the_filters_page(page, app_url):
    _open(page, app_url, "train", "Train")
    _choose(page, "Data", DIGITS)
    wait_for_app(page, "1,437 training")
    page.get_by_role("tab", name="Optimisation").click()
    _slider_to(page, "Epochs", "Home")  # 1 epoch ...
    for _ in range(3):
        page.keyboard.press("ArrowRight")  # ... then 4
    wait_for_app(page)
    page.get_by_role("button", name="Train", exact=True).click()
    # the fragment refreshes the curves while training runs in the background
    page.get_by_text(re.compile(r"Epoch 2, iteration \d+ of 92")).first.wait_for(timeout=240_000)
    _no_error(page)
    assert page.get_by_role("button", name="Stop", exact=True).count() >= 1
    page.locator(".js-plotly-plot").first.evaluate("e => e.scrollIntoView()")
    screenshot(page, "training_curves_mid_run")
    page.get_by_text("best validation accuracy").first.wait_for(timeout=300_000)
    wait_for_app(page)
    _no_error(page)
    screenshot(page, "training_done")
    page.get_by_role("button", name="Use it on every page").click()
    sidebar = page.locator("[data-testid='stSidebar']")
    try:
        sidebar.get_by_text("Using trained_cnn · trained here on digits").first.wait_for(timeout=60_000)
    finally:
        screenshot(page, "training_used_in_the_sidebar")
    open_by_link(page, "Filters")  # within the session (a reload would start a new one)
    wait_for_app(page, "Filter norms")
    _no_error(page)
    assert page.get_by_text("trained_cnn · trained here on digits").count() >= 1
    slider = page.get_by_role("slider", name="Training epoch")
    assert slider.get_attribute("max") == "4"
    slider.focus()
    page.keyboard.press("Home")
    wait_for_app(page, "at initialisation (epoch 0)")
    _no_error(page)
    screenshot(page, "training_filters_of_the_trained_network")


def test_stop_ends_a_training_within_moments(page, app_url):
    _open(page, app_url, "train", "Train")
    _choose(page, "Data", DIGITS)
    wait_for_app(page, "1,437 training")
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text(re.compile(r"Epoch 1, iteration \d+ of")).first.wait_for(timeout=120_000)
    began = time.time()
    page.get_by_role("button", name="Stop", exact=True).first.click()
    page.get_by_text(re.compile(r"^Stopped after")).first.wait_for(timeout=60_000)
    assert time.time() - began < 120  # the loop halts within one iteration (tests/test_training.py); this
    # bounds the whole round trip (validation of the partial epoch, the page's poll) on a busy, shared CPU
    _no_error(page)
