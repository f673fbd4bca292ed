"""Every page in a real browser at half a projector (800 × 900) and on a phone (390 px wide): no image,
plot, caption or button overlaps another or leaves the window, and no button label is cut short.
The screenshots go to artifacts/screenshots/layout_*.png; bench/bench_layout.py sweeps more sizes."""

from __future__ import annotations

import functools

import pytest

from conftest import screenshot, wait_for_app
from layout import sweep

SIZES = [(800, 900), (390, 844)]  # a projector shared with slides (or half a laptop); a phone


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_page_fits_the_window(browser, app_url, size):
    results = sweep(browser, app_url, size, functools.partial(wait_for_app, quiet=0.75), screenshot)
    assert len(results) >= 20 and sum(r.elements for r in results) > 50  # the pages did draw something
    problems = [f"{r.path}: {problem}" for r in results for problem in r.problems]
    assert not problems, "\n".join(problems)
