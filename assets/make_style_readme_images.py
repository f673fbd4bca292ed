"""The README's style pictures: the 26 styles on the cat, and one Gatys result (cat, brick texture).

    python assets/make_style_readme_images.py [--grid-only]

Writes ``assets/readme/fast_style_grid.jpg`` and ``assets/readme/gatys_cat_brick.jpg`` with the page's
defaults (Gatys: 256 px, 150 Adam steps, α = 1, β = 10, γ = 10, layers conv1_1…conv5_1 / conv4_2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnviz.display import pixels_to_array, tile  # noqa: E402
from cnnviz.samples import load_sample  # noqa: E402
from cnnviz.style import NUM_STYLES, loss_network, style_transfer, stylize  # noqa: E402
from cnnviz.synthesis import image_pixels, run  # noqa: E402

OUT = ROOT / "assets" / "readme"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    vgg = loss_network(pretrained=True)
    cat = load_sample("cat (scikit-image)")
    import skimage.data

    brick = Image.fromarray(skimage.data.brick()).convert("RGB")
    small = image_pixels(vgg, cat, 160)
    styles = stylize(small.expand(NUM_STYLES, -1, -1, -1), torch.eye(NUM_STYLES))
    thumbs = [pixels_to_array(small)] + [pixels_to_array(styles[k : k + 1]) for k in range(NUM_STYLES)]
    Image.fromarray(tile(thumbs, 9, pad=4)).save(OUT / "fast_style_grid.jpg", quality=88)
    if "--grid-only" in sys.argv:
        return
    last = run(style_transfer(vgg, image_pixels(vgg, cat, 256), image_pixels(vgg, brick, 256)))
    content = pixels_to_array(image_pixels(vgg, cat, 256))
    result = pixels_to_array(last.pixels)
    style = np.asarray(brick.resize((content.shape[0], content.shape[0])))
    row = np.concatenate([content, np.full((content.shape[0], 4, 3), 255, np.uint8), style,
                          np.full((content.shape[0], 4, 3), 255, np.uint8), result], axis=1)
    Image.fromarray(row).save(OUT / "gatys_cat_brick.jpg", quality=88)
    print("losses at the end:", {k: round(v, 4) for k, v in last.losses.items()})


if __name__ == "__main__":
    main()
