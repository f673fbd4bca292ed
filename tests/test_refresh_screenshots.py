"""docs/refresh_screenshots.py: one screenshot per page of the navigation, shrunk, cut between elements,
and a clear failure naming the pages that have none. Synthetic screenshots in a temporary folder: the
test never touches docs/ or artifacts/."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))

import refresh_screenshots as refresh  # noqa: E402
from layout import page_paths  # noqa: E402

PAGES = [path or "home" for path in page_paths()]


def _page_picture(width: int, height: int, block_every: int = 300) -> Image.Image:
    """White, with a dark 'element' 200 px tall every ``block_every`` px (blank rows between them)."""
    pixels = np.full((height, width, 3), 255, np.uint8)
    for top in range(0, height, block_every):
        pixels[top + 50 : top + 250, width // 3 : width - 20] = (40, 80, 160)
    return Image.fromarray(pixels)


def test_every_page_of_the_navigation_gets_a_small_png_and_the_preferred_source_wins(tmp_path):
    shots, target = tmp_path / "shots", tmp_path / "docs"
    shots.mkdir()
    for page in PAGES:
        _page_picture(800, 900).save(shots / f"layout_800x900_{page}.png")
    _page_picture(1600, 5000).save(shots / "pages_home.png")  # preferred over the layout one
    written = refresh.refresh(shots, target)
    assert len(written) == len(PAGES) == 23 and sorted(p.name for p in target.iterdir()) == sorted(f"{p}.png" for p in PAGES)
    used = {page: path.name for page, path, _ in written}
    assert used["home"] == "pages_home.png" and used["filters"] == "layout_800x900_filters.png"
    home = Image.open(target / "home.png")
    assert home.width == refresh.MAX_WIDTH and home.height <= refresh.MAX_HEIGHT
    rows = np.asarray(home.convert("L"))[-3:, home.width // 3 :]
    assert rows.min() == rows.max() == 255  # the cut runs through a blank row, not through an element
    assert Image.open(target / "filters.png").size == (800, 900)  # small enough: only recompressed


def test_missing_pages_are_named_and_nothing_is_written(tmp_path):
    shots, target = tmp_path / "shots", tmp_path / "docs"
    shots.mkdir()
    for page in PAGES[:-2]:
        _page_picture(400, 400).save(shots / f"pages_{page}.png")
    with pytest.raises(SystemExit) as failure:
        refresh.refresh(shots, target)
    message = str(failure.value)
    assert all(page in message for page in PAGES[-2:]) and "2 page(s)" in message
    assert not target.exists()


def test_a_long_page_without_blank_rows_is_cut_at_the_limit():
    busy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (4000, 600, 3), dtype=np.uint8))
    assert refresh.blank_row_cut(busy, 2600) == 2600
    assert refresh.blank_row_cut(busy.crop((0, 0, 600, 1000)), 2600) == 1000
