"""The "Style" pages in a real browser, on the cat: each page's main action with few steps, and a
screenshot of each under artifacts/screenshots/ (style_*.png)."""

from __future__ import annotations

import re

from conftest import open_by_link, screenshot, wait_for_app
from test_browser_home import choose_sample


def open_with_cat(page, app_url: str, title: str) -> None:
    """Home, the cat as the current image, then the page by its navigation link (same session)."""
    page.set_default_timeout(120_000)  # a busy machine: clicks may wait for a slow browser
    page.goto(app_url)
    wait_for_app(page, "Top prediction", timeout=300_000)  # a cold server on a busy machine
    choose_sample(page, "cat (scikit-image)")
    wait_for_app(page)
    open_by_link(page, title)
    wait_for_app(page, "What am I looking at?", timeout=300_000)


def to_minimum(page, label: str) -> None:
    """Move a slider (or select slider) to its smallest value with the keyboard."""
    page.get_by_role("slider", name=label).first.focus()
    page.keyboard.press("Home")
    wait_for_app(page)


def assert_clean(page) -> None:
    assert page.get_by_text("Traceback").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0


def test_fast_style_grid_one_style_and_a_blend(page, app_url):
    open_with_cat(page, app_url, "Fast style")
    page.get_by_text("style 25", exact=True).first.wait_for(timeout=600_000)
    page.get_by_text(re.compile(r"0\.50 × style 0 \+ 0\.50 × style 7")).first.wait_for(timeout=600_000)
    wait_for_app(page)
    assert_clean(page)
    assert page.locator("[data-testid='stImage']").count() >= 26 + 2
    assert page.locator("[data-testid='stAlert']").filter(has_text="Random weights").count() == 0  # the trained network
    screenshot(page, "style_fast")


def test_gatys_with_the_brick_texture(page, app_url):
    open_with_cat(page, app_url, "Style transfer (Gatys)")
    to_minimum(page, "Steps")
    to_minimum(page, "Output size (longer side, px)")
    page.get_by_role("button", name="Transfer the style", exact=True).click()
    page.get_by_text("Download PNG").first.wait_for(timeout=600_000)
    wait_for_app(page)
    assert_clean(page)
    assert page.get_by_text("style: brick (scikit-image)").count() >= 1
    screenshot(page, "style_gatys")


def test_texture_row(page, app_url):
    open_with_cat(page, app_url, "Texture synthesis")
    to_minimum(page, "Steps per texture")
    to_minimum(page, "Texture size (px)")
    page.get_by_role("button", name="Synthesise the row", exact=True).click()
    page.get_by_text("Download PNG").first.wait_for(timeout=600_000)
    wait_for_app(page)
    assert_clean(page)
    assert page.get_by_text(re.compile(r"conv1_1 … conv5_1 · style loss")).count() == 1
    screenshot(page, "style_texture")


def test_gram_page(page, app_url):
    open_with_cat(page, app_url, "Gram matrices")
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    wait_for_app(page)
    assert_clean(page)
    screenshot(page, "style_gram")


def test_train_page_shipped_networks_and_a_short_live_run(page, app_url):
    open_with_cat(page, app_url, "Train a style network")
    page.get_by_text("instance norm ·").first.wait_for(timeout=120_000)
    to_minimum(page, "Steps")
    page.get_by_role("button", name="Start training", exact=True).click()
    page.get_by_text(re.compile(r"done: step 10 of 10")).first.wait_for(timeout=600_000)
    page.get_by_text("Download the network (safetensors)").first.wait_for(timeout=30_000)
    assert_clean(page)
    screenshot(page, "style_train")
