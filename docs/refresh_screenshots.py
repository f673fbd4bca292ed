"""Refresh README's screenshot of every page, docs/pages/<page>.png, from the browser screenshots under
artifacts/screenshots/ (test runs write only there, never into tracked files).

For every page of app.py's navigation it takes the first screenshot that exists among ``CANDIDATES``:
``pages_<page>.png`` (`docs/make_screenshots.py --pages`: the trained SqueezeNet with the cat, 1280 px,
whole page), then ``layout_800x900_<page>.png`` (tests/test_browser_layout.py: the small CNN). It
shrinks it to at most ``MAX_WIDTH`` px wide, cuts a very long page at a blank row below ``MAX_HEIGHT``
px (between two elements, never through one), and saves an optimised 256-colour PNG. A page with no
screenshot fails the run with the list of such pages.

Run: `.venv/bin/python docs/make_screenshots.py --pages && .venv/bin/python docs/refresh_screenshots.py`
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from layout import page_paths  # noqa: E402

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
TARGET = ROOT / "docs" / "pages"
MAX_WIDTH = 1280  # px
MAX_HEIGHT = 2600  # px at the saved width; a longer page is cut at a blank row
CANDIDATES = ("pages_{page}", "layout_800x900_{page}")  # the first that exists is used


def source(page: str, folder: Path = SCREENSHOTS) -> Path | None:
    """The screenshot to use for ``page`` (its URL path, "home" for Home), or None when there is none."""
    for pattern in CANDIDATES:
        path = folder / f"{pattern.format(page=page)}.png"
        if path.exists():
            return path
    return None


def blank_row_cut(image: Image.Image, max_height: int, min_height: int = 600) -> int:
    """The height at which to cut ``image``: its own height when short enough, else the lowest row
    at or above ``max_height`` (and below ``min_height``) whose pixels are all one colour, so the cut
    runs between two elements. Falls back to ``max_height`` when no such row exists.

    Returns:
        The number of rows to keep.
    """
    if image.height <= max_height:
        return image.height
    gray = np.asarray(image.convert("L"), dtype=np.int16)[:max_height]
    main = gray[:, gray.shape[1] // 4 :]  # the main area: the sidebar ends earlier than the page
    plain = np.flatnonzero(main.max(axis=1) - main.min(axis=1) <= 2)
    plain = plain[plain >= min_height]
    return int(plain[-1]) + 1 if len(plain) else max_height


def shrink(image: Image.Image, max_width: int = MAX_WIDTH, max_height: int = MAX_HEIGHT) -> Image.Image:
    """``image`` at most ``max_width`` px wide (Lanczos), cut at a blank row below ``max_height`` px."""
    image = image.convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
    return image.crop((0, 0, image.width, blank_row_cut(image, max_height)))


def save_png(image: Image.Image, path: Path) -> None:
    """A 256-colour optimised PNG (a screenshot's flat colours survive; the repository stays small)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def refresh(folder: Path = SCREENSHOTS, target: Path = TARGET) -> list[tuple[str, Path, Path]]:
    """Write ``target/<page>.png`` for every page from ``folder``.

    Returns:
        (page, screenshot used, file written) for every page.

    Raises:
        SystemExit: naming every page that has no screenshot (nothing is written then).
    """
    pages = [path or "home" for path in page_paths()]
    chosen = {page: source(page, folder) for page in pages}
    missing = [page for page, path in chosen.items() if path is None]
    if missing:
        raise SystemExit(f"no screenshot in {folder} for {len(missing)} page(s): {', '.join(missing)}. Looked for "
                         + ", ".join(p.format(page="<page>") + ".png" for p in CANDIDATES)
                         + "; run `docs/make_screenshots.py --pages` (or tests/test_browser_layout.py).")
    written = []
    for page, path in chosen.items():
        out = target / f"{page}.png"
        save_png(shrink(Image.open(path)), out)
        written.append((page, path, out))
    return written


def main() -> None:
    for page, used, out in refresh():
        print(f"{out.relative_to(ROOT)} <- {used.name} ({Image.open(out).size[0]}×{Image.open(out).size[1]}, "
              f"{out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
