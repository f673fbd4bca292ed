"""Layout sweep: every page of the app in Chromium at four window sizes (a 390-px phone, half a
projector at 800 × 900, a laptop at 1280 × 720, a full HD projector at 1920 × 1080), on the small CNN.

For each page and size it counts what tests/test_browser_layout.py asserts on the first two sizes:
images, plots, captions and buttons that overlap one another, that leave the window, button labels
cut short, and maps squeezed narrow; and the seconds until the page's run was over (the first size
also computes and caches each page's first results, so later sizes are faster). Screenshots go to
artifacts/screenshots/layout_<w>x<h>_<page>.png.

Run: ``.venv/bin/python bench/bench_layout.py [--sizes 390x844,800x900,1280x720,1920x1080] [--pages a,b]``.
Prints a markdown table (pages × sizes: overlaps / overflow / cut labels / squeezed, seconds) and the
problems found, if any.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import CHROMIUM, screenshot, serve_app, wait_for_app  # noqa: E402
from layout import sweep  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="800x900,390x844,1280x720,1920x1080")
    parser.add_argument("--pages", default="", help="comma-separated URL paths (home for /); default: every page")
    args = parser.parse_args()
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    paths = ["" if p == "home" else p for p in args.pages.split(",")] if args.pages else None

    from playwright.sync_api import sync_playwright

    results = {}
    with serve_app("bench_layout") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        for size in sizes:
            start = time.perf_counter()
            results[size] = sweep(browser, url, size, functools.partial(wait_for_app, quiet=0.75), screenshot, paths)
            print(f"{size[0]}×{size[1]}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        browser.close()

    names = [r.path for r in results[sizes[0]]]
    print("| page | " + " | ".join(f"{w}×{h}" for w, h in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for i, name in enumerate(names):
        cells = []
        for size in sizes:
            r = results[size][i]
            counts = (len(r.overlaps), len(r.overflow), len(r.cut), len(r.small) + len(r.errors))
            cells.append(("ok" if not any(counts) else "/".join(map(str, counts))) + f" · {r.seconds:.1f} s")
        print(f"| {name} | " + " | ".join(cells) + " |")
    totals = [sum(r.seconds for r in results[size]) for size in sizes]
    print("| **all pages** | " + " | ".join(f"{sum(bool(r.problems) for r in results[s])} with problems · {t:.0f} s"
                                             for s, t in zip(sizes, totals)) + " |")
    print("\nCells: `ok`, or overlaps/overflow/cut labels/squeezed-or-error counts; then seconds to a finished run.")
    for size in sizes:
        for r in results[size]:
            for problem in r.problems:
                print(f"- {size[0]}×{size[1]} {r.path}: {problem}")


if __name__ == "__main__":
    main()
