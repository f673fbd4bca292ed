"""Several students at once in a real browser: on one fresh server, one session dreams (DeepDream) on a
model no session has used yet while two others switch to it on Saliency (occlusion on) and Maximally
activating patches, so their first uses of the model (occlusion copy, receptive field, Grad-CAM layer)
overlap the others' forward passes. No page may show an exception; the server log holds no traceback."""

from __future__ import annotations

import re

from conftest import ROOT, screenshot, serve_app, wait_for_app

MODEL = "squeezenet1_1"  # used by no other browser test before this one: its first load happens here
TIMEOUT = 180_000
EXCEPTION = "[data-testid='stException']"


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label`` (sidebar or page)."""
    box = page.locator("[data-testid='stSelectbox']").filter(has_text=label)
    box.locator("input").click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()


def test_three_sessions_use_a_new_model_at_once(browser):
    paths = ("deepdream", "saliency", "patches")
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in paths]
    pages = dict(zip(paths, (context.new_page() for context in contexts)))
    try:
        with serve_app("streamlit_sessions") as url:
            pages["deepdream"].goto(url)  # home first: st.navigation must have run once (see test_browser_inside)
            wait_for_app(pages["deepdream"])
            for path, page in pages.items():
                page.goto(f"{url}/{path}")
            for page in pages.values():  # no need to wait for the small CNN's results: the next choice reruns
                page.get_by_text("What am I looking at?").wait_for(timeout=TIMEOUT)
            pages["patches"].locator("[data-testid='stSelectbox']").filter(has_text="Dataset").wait_for(timeout=TIMEOUT)
            choose(pages["patches"], "Dataset", "sample photos")  # 8 photos, not the small CNN's 500 digits
            wait_for_app(pages["patches"], "8 images of sample photos", timeout=TIMEOUT)
            dream = pages["deepdream"]  # one student dreams on a model nobody used before ...
            choose(dream, "Architecture", MODEL)
            wait_for_app(dream, f"{MODEL} · ", timeout=TIMEOUT)
            dream.get_by_role("slider", name="Steps per octave").focus()
            dream.keyboard.press("End")  # 100 steps per octave: still dreaming while the others start
            wait_for_app(dream, timeout=TIMEOUT)
            dream.get_by_role("button", name="Dream", exact=True).first.click()
            dream.get_by_text(re.compile(r"Step \d+ of 300")).first.wait_for(timeout=TIMEOUT)
            for path in ("saliency", "patches"):  # ... while two others switch to it: their first uses overlap
                choose(pages[path], "Architecture", MODEL)
            occlusion_done = re.compile(r"incremental inference|batched engine")  # the occlusion map's caption
            for path, done in (("saliency", occlusion_done), ("patches", "(empirical) on 224×224")):
                page = pages[path]
                page.locator(EXCEPTION).or_(page.get_by_text(done)).first.wait_for(timeout=TIMEOUT)
            stop = dream.locator("[data-testid='stMainBlockContainer']").get_by_role("button", name="Stop")
            stop.click()  # keeps the image so far (or shows the finished one)
            dream.locator(EXCEPTION).or_(dream.get_by_text("Download PNG")).first.wait_for(timeout=TIMEOUT)
            for path, page in pages.items():
                for _ in range(2):  # now, and once the page is quiet
                    exceptions = page.locator(EXCEPTION)
                    assert exceptions.count() == 0, f"{path}: {exceptions.first.inner_text()}"
                    wait_for_app(page, timeout=TIMEOUT)
                assert page.get_by_text(f"{MODEL} · ").count() >= 1, path
                screenshot(page, f"sessions_{path}")
            assert pages["saliency"].locator(".js-plotly-plot").count() == 4
        log = (ROOT / "artifacts" / "streamlit_sessions.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        for context in contexts:
            context.close()
