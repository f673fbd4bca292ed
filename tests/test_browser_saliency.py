"""The Saliency page in a real browser (Chromium via Playwright) with the bundled small CNN."""

from __future__ import annotations

from conftest import screenshot, wait_for_app


def test_saliency_page_grid_sanity_check_and_compare(app_url, page):
    # home first: until app.py has run st.navigation once in this server, Streamlit serves /saliency
    # from the pages/ folder directly, without the app's sidebar
    page.goto(app_url)
    wait_for_app(page)
    page.goto(f"{app_url}/saliency")
    wait_for_app(page, "Why “")
    main = page.locator("[data-testid='stMain']")
    # default methods: vanilla gradient, guided backprop, Grad-CAM, occlusion -> one figure each
    assert main.locator(".js-plotly-plot").count() == 4
    for title in ("vanilla gradient", "guided backprop", "Grad-CAM", "occlusion"):  # each map's title
        assert main.get_by_text(title, exact=True).count() >= 1, title
    assert main.get_by_text("small_cnn · trained on MNIST").count() >= 4
    assert main.get_by_text("Download the grid (PNG)").count() == 1
    assert main.locator("[data-testid='stException']").count() == 0
    screenshot(page, "saliency_grid")

    main.get_by_role("button", name="Run the sanity check (Adebayo et al., 2018)").click()
    wait_for_app(page, "randomised down to features.0")
    assert main.get_by_text("ρ = ").count() >= 3
    screenshot(page, "saliency_sanity")

    main.get_by_text("Compare mode: one method on two models").click()
    wait_for_app(page, "squeezenet1_1 · ")  # the second model: the trained SqueezeNet when fetched, else random
    assert main.locator(".js-plotly-plot").count() == 2
    assert main.locator("[data-testid='stException']").count() == 0
    screenshot(page, "saliency_compare")
