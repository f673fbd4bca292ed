"""The layout sweep shared by tests/test_browser_layout.py and bench/bench_layout.py: open every page
at one window size, then measure whether images, plots, buttons and captions overlap one another,
leave the window, or cut their labels short."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What a person reads or clicks in the main area. Buttons inside a plot (the mode bar) or an element
# toolbar (fullscreen) float over their element by design and are left out.
_MEASURE = r"""
() => {
  const main = document.querySelector("[data-testid='stMain']") || document.body;
  const selectors = [
    ["image", "[data-testid='stImage'] img"],
    ["plot", ".js-plotly-plot"],
    ["caption", "[data-testid='stImageCaption']"],
    ["button", "[data-testid='stButton'] button, [data-testid='stDownloadButton'] button, [data-testid='stFormSubmitButton'] button"],
    ["table", "[data-testid='stDataFrame'], [data-testid='stTable']"],
  ];
  const boxes = [];
  for (const [kind, selector] of selectors) {
    for (const el of main.querySelectorAll(selector)) {
      if (el.closest(".modebar, [data-testid='stElementToolbar'], [data-testid='stSidebar']")) continue;
      const r = el.getBoundingClientRect();
      if (r.width < 1 || r.height < 1) continue;
      const style = getComputedStyle(el);
      if (style.visibility === "hidden" || style.display === "none") continue;
      const label = (el.innerText || el.getAttribute("alt") || "").trim().slice(0, 40);
      boxes.push({kind, label, left: r.left + scrollX, top: r.top + scrollY, right: r.right + scrollX,
                  bottom: r.bottom + scrollY, el});
    }
  }
  const tol = 2;  // px: borders that touch are not an overlap
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      if (a.el.contains(b.el) || b.el.contains(a.el)) continue;
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > tol && h > tol) overlaps.push(`${a.kind} '${a.label}' × ${b.kind} '${b.label}' (${Math.round(w)}×${Math.round(h)} px)`);
    }
  }
  const width = document.documentElement.clientWidth;
  const overflow = boxes.filter(b => b.left < -tol || b.right > width + tol)
    .map(b => `${b.kind} '${b.label}' spans ${Math.round(b.left)}…${Math.round(b.right)} of ${width} px`);
  const cut = [];
  for (const el of main.querySelectorAll("[data-testid='stButton'] button, [data-testid='stDownloadButton'] button")) {
    for (const part of [el, ...el.querySelectorAll("*")]) {
      if (part.clientWidth > 0 && part.scrollWidth > part.clientWidth + 1) { cut.push(`button '${el.innerText.trim().slice(0, 40)}'`); break; }
    }
  }
  const small = boxes.filter(b => (b.kind === "image" || b.kind === "plot") && b.right - b.left < 60 && b.bottom - b.top > 120)
    .map(b => `${b.kind} '${b.label}' only ${Math.round(b.right - b.left)} px wide`);
  return {overlaps, overflow, cut, small, elements: boxes.length};
}
"""


@dataclass
class Layout:
    """What the sweep measured on one page at one window size."""

    path: str
    size: tuple[int, int]
    overlaps: list[str] = field(default_factory=list)
    overflow: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)  # button labels cut short by an ellipsis
    small: list[str] = field(default_factory=list)  # images or plots squeezed narrow beside tall ones
    elements: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.overlaps + self.overflow + self.cut + self.small + self.errors


def page_paths() -> list[str]:
    """Every page's URL path, in the order of app.py's navigation (the page file's stem)."""
    text = (ROOT / "app.py").read_text()
    paths = []
    for part in text.split('st.Page("pages/')[1:]:
        stem = part.split(".py", 1)[0]
        paths.append("" if stem == "home" else stem)
    return paths


def measure(page, path: str, url: str, size: tuple[int, int], wait, timeout: float = 60_000) -> Layout:
    """Open ``url/path`` in ``page`` (already sized), wait for the run to end, and measure it."""
    start = time.perf_counter()
    page.goto(f"{url}/{path}")
    wait(page, "What am I looking at?" if path else None, timeout=timeout)
    result = page.evaluate(_MEASURE)
    errors = [page.inner_text("[data-testid='stException']")[:300]] if page.query_selector("[data-testid='stException']") else []
    errors += ["Traceback on the page"] if page.get_by_text("Traceback").count() else []
    return Layout(path or "home", size, result["overlaps"], result["overflow"], result["cut"], result["small"],
                  result["elements"], time.perf_counter() - start, errors)


def _whole_page_screenshot(page, size: tuple[int, int], screenshot, name: str) -> None:
    """Streamlit scrolls its main area itself, so a full-page screenshot would show one window's
    height: stretch the window to the content's height (same width, same layout) for the picture."""
    height = page.evaluate("() => { const m = document.querySelector(\"[data-testid='stMain']\");"
                           " return m ? m.scrollHeight : document.body.scrollHeight; }")
    page.set_viewport_size({"width": size[0], "height": max(size[1], min(int(height), 8000))})
    try:
        page.wait_for_timeout(300)
        screenshot(page, name)
    finally:
        page.set_viewport_size({"width": size[0], "height": size[1]})


def sweep(browser, url: str, size: tuple[int, int], wait, screenshot=None, paths: list[str] | None = None) -> list[Layout]:
    """Measure every page at one window size in one browser context (a phone: touch and a mobile
    user agent's scale); ``screenshot(page, name)`` saves each page when given."""
    phone = size[0] < 640
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, is_mobile=phone, has_touch=phone,
                                  device_scale_factor=1)
    page = context.new_page()
    try:
        page.goto(url)  # app.py must run once before /path is served through its navigation
        wait(page)
        results = []
        for path in paths if paths is not None else page_paths():
            results.append(measure(page, path, url, size, wait))
            if screenshot:
                _whole_page_screenshot(page, size, screenshot, f"layout_{size[0]}x{size[1]}_{path or 'home'}")
        return results
    finally:
        context.close()
