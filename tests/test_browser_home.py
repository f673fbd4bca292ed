"""Real-browser test of the home page: Streamlit served headless, driven by Playwright on Chromium."""

from __future__ import annotations

from conftest import screenshot, wait_for_app


def choose_sample(page, name: str) -> None:
    """Pick a gallery image in the sidebar's "Sample image" select box."""
    box = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").filter(has_text="Sample image")
    box.locator("input").click()
    page.keyboard.type(name)
    page.get_by_role("option", name=name, exact=True).click()


def test_home_page_predicts_the_chosen_sample(app_url, page):
    page.goto(app_url)
    wait_for_app(page, "Top prediction")
    assert page.get_by_text("small_cnn · trained on MNIST").first.is_visible()
    choose_sample(page, "digit 7")
    wait_for_app(page, "digit 7, as the model sees it")
    page.get_by_text("Top prediction: 7").wait_for(timeout=30_000)
    assert page.locator(".js-plotly-plot").count() == 1
    assert page.get_by_text("Traceback").count() == 0
    screenshot(page, "home")


def test_a_corrupt_upload_gives_a_message_and_keeps_the_image(app_url, page):
    page.goto(app_url)
    wait_for_app(page, "Top prediction")
    source = page.locator("[data-testid='stSidebar'] [data-testid='stRadio']").filter(has_text="Camera")
    source.get_by_text("Upload", exact=True).click()
    wait_for_app(page)
    page.locator("[data-testid='stSidebar'] input[type='file']").set_input_files(
        files=[{"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8\xff\xe0 this is not really a jpeg"}]
    )
    wait_for_app(page, "The previous image is kept")
    assert page.get_by_text("Top prediction: 3").is_visible()  # the default digit is still in use
    assert page.get_by_text("Traceback").count() == 0
    screenshot(page, "home_corrupt_upload")


def test_a_deep_link_on_a_fresh_server_gets_the_whole_app(page):
    """A student's first request may be /saliency: it must come with the app's sidebar."""
    from conftest import serve_app

    with serve_app("streamlit_deep_link") as url:
        page.goto(f"{url}/saliency")
        wait_for_app(page)
        sidebar = page.locator("[data-testid='stSidebar']")
        try:  # waits: in a whole-suite run the first visit of a fresh server once showed it a moment late
            sidebar.get_by_text("Architecture").wait_for(state="visible", timeout=30_000)
            assert sidebar.get_by_role("link", name="Home").is_visible()
            assert page.locator("h1").first.inner_text().startswith("Saliency")
        except Exception:
            screenshot(page, "deep_link_failed")  # where it stood: the assertion's message alone may not say
            raise


def test_a_link_to_a_page_that_does_not_exist_says_so(app_url, page):
    page.goto(app_url)
    wait_for_app(page, "Top prediction")
    page.goto(f"{app_url}/filtres")  # a typo in a deep link
    wait_for_app(page, "There is no page “filtres”")
    assert page.locator("h1").first.inner_text().startswith("cnnviz")  # Home, and it says why
    screenshot(page, "home_unknown_page")
