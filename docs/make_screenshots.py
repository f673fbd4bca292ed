"""Screenshots of the app on the trained ImageNet SqueezeNet with the cat, for README.md.

Serves the app as `make run` does (the package sources fetched), drives Debian's Chromium with
Playwright through the pages, and writes small PNGs into docs/. Run: `.venv/bin/python docs/make_screenshots.py [--generate]`
(a few minutes on 2 cores); `--first-views`: what the Generate and Style pages show on opening, untouched;
`--pages`: every page of the navigation as it opens, whole, at 1280 px, into artifacts/screenshots/ as the
browser tests' screenshots are (`docs/refresh_screenshots.py` then copies them to docs/pages/). Needs the
test tools (`make test` installs them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, screenshot, serve_app, wait_for_app  # noqa: E402

DOCS = ROOT / "docs"
WIDTH = 900  # px of the saved PNGs
ONLY_GENERATE = "--generate" in sys.argv  # only the Generate pages' screenshots (the slow ones)
FIRST_VIEWS = "--first-views" in sys.argv  # only what the Generate and Style pages show on opening
ALL_PAGES = any(a == "--pages" or a.startswith("--pages=") for a in sys.argv)  # every page (or those named
ONLY = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--pages=")), None)  # --pages=home,live)
PAGES_SIZE = (1280, 900)  # the window for --pages: a laptop or a projector
PAGES_PREFIX = "pages"
FIRST_VIEW_PAGES = [  # (URL path, text on the page once its first view is there, file name)
    ("class_visualization", "A first view", "first_view_class_visualization"),
    ("adversarial", "A first view", "first_view_adversarial"),
    ("inversion", "A first view", "first_view_inversion"),
    ("deepdream", "A first view", "first_view_deepdream"),
    ("style_texture", "A quick first view", "first_view_texture"),
    ("style_gatys", "A quick first view", "first_view_gatys"),
]


def save(page, name: str, clip_to_main: bool = True) -> None:
    """Screenshot of the page's main area, shrunk to ``WIDTH`` px, as docs/<name>.png."""
    raw = DOCS / f".{name}.raw.png"
    target = page.locator("[data-testid='stMain']") if clip_to_main else page
    target.screenshot(path=str(raw))
    image = Image.open(raw).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.Resampling.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(DOCS / f"{name}.png", optimize=True)
    raw.unlink()
    print(f"wrote docs/{name}.png ({(DOCS / f'{name}.png').stat().st_size // 1024} KB)")


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the main area's select box labelled ``label`` by typing it."""
    box = page.locator("[data-testid='stMain'] [data-testid='stSelectbox']").filter(has_text=label)
    box.locator("input").click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()
    wait_for_app(page)


def slide(page, label: str, presses: int) -> None:
    """Move the slider labelled ``label`` right by ``presses`` keyboard steps."""
    slider = page.locator(f"[data-testid='stMain'] input[type=range][aria-label='{label}']").first
    slider.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
    wait_for_app(page)


def run_button(page, name: str, done_text: str, timeout: float = 600_000) -> None:
    page.get_by_role("button", name=name).click()
    wait_for_app(page, done_text, timeout=timeout)


def all_pages(browser, url: str) -> None:
    """Every page as it opens (first views included), whole, as artifacts/screenshots/pages_<page>.png.

    Reuses the layout sweep (tests/layout.py), which stretches the window to each page's height; a
    page is saved once no script run is in progress for 3 s (the first views on the Generate and Style
    pages take up to minutes on 2 cores). A page that shows an exception or overlapping elements fails."""
    from layout import sweep

    def wait(page, text=None, timeout=0):
        wait_for_app(page, text, timeout=600_000, quiet=3.0)

    def save_as(page, name: str):
        # a short page: the window is stretched to the main area only, which would cut the sidebar
        sidebar = page.evaluate("() => { const s = document.querySelector(\"[data-testid='stSidebarContent']\");"
                                " return s ? s.scrollHeight : 0; }")
        if sidebar > page.viewport_size["height"]:
            page.set_viewport_size({"width": PAGES_SIZE[0], "height": int(sidebar) + 20})
            page.wait_for_timeout(500)
        return screenshot(page, name.replace(f"layout_{PAGES_SIZE[0]}x{PAGES_SIZE[1]}", PAGES_PREFIX))

    paths = None if ONLY is None else ["" if name == "home" else name for name in ONLY]
    results = sweep(browser, url, PAGES_SIZE, wait, save_as, paths)
    for result in results:
        print(f"{result.path}: {result.seconds:.0f} s, {result.elements} elements"
              + (f", PROBLEMS: {result.problems}" if result.problems else ""))
    bad = [r.path for r in results if r.errors]
    if bad:
        raise SystemExit(f"pages showing an exception: {bad}")


def main() -> None:
    from playwright.sync_api import sync_playwright

    with serve_app("streamlit_docs", default_model=None) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        if ALL_PAGES:
            all_pages(browser, url)
            browser.close()
            return
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()

        def open_page(path: str, text: str | None = None) -> None:
            page.goto(url)
            wait_for_app(page, "Top prediction")
            if path:
                page.goto(f"{url}/{path}")
                page.get_by_text(text).filter(visible=True).first.wait_for(timeout=300_000)
                wait_for_app(page, timeout=300_000)

        if FIRST_VIEWS:
            page.set_viewport_size({"width": 1400, "height": 900})
            for path, text, name in FIRST_VIEW_PAGES:
                open_page(path, text)
                caption = page.get_by_text(text).filter(visible=True).first
                caption.evaluate("e => e.scrollIntoView({block: 'start'})")  # the caption on top, the result below
                page.wait_for_timeout(500)
                save(page, name, clip_to_main=False)  # the window as scrolled: the main area is a scroll box
            browser.close()
            return

        if not ONLY_GENERATE:
            open_page("")
            save(page, "home_squeezenet_cat")
            open_page("filters", "Filter norms")
            save(page, "filters_squeezenet")
            open_page("saliency", "Why “tiger cat”?")
            page.locator("[data-testid='stMain'] .js-plotly-plot").first.scroll_into_view_if_needed()
            save(page, "saliency_squeezenet_cat")
            open_page("activations", "One channel, large")
            save(page, "activations_squeezenet_cat")

        open_page("class_visualization", "Regularizers")
        choose(page, "Class", "130: flamingo")
        slide(page, "Steps", 10)  # 100 -> 150, with the page's recommended regularizers (blur, jitter, clipping)
        run_button(page, "Generate", "Download PNG")
        save(page, "classviz_flamingo")

        open_page("deepdream", "Steps per octave")
        choose(page, "Layer", "features.8")
        run_button(page, "Dream", "Download PNG")
        save(page, "deepdream_features8")

        open_page("adversarial", "PGD steps")
        run_button(page, "Attack", "Adversarial: top-5")
        save(page, "adversarial_squeezenet_cat")
        browser.close()


if __name__ == "__main__":
    main()
