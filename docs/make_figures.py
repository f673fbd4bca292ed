"""Figures for README.md made with the library on the trained SqueezeNet and the cat: feature
inversion of three depths at the Inversion page's default settings. Run:
`.venv/bin/python docs/make_figures.py` (a few minutes on 2 cores)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnviz import load_model, synthesis  # noqa: E402
from cnnviz.display import pixels_to_array  # noqa: E402
from cnnviz.samples import load_sample  # noqa: E402


def captioned(array: np.ndarray, text: str) -> Image.Image:
    image = Image.fromarray(array).convert("RGB")
    canvas = Image.new("RGB", (image.width, image.height + 18), "white")
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text((4, image.height + 3), text, fill="black")
    return canvas


def main() -> None:
    model = load_model("squeezenet1_1")
    x = model.preprocessing(load_sample("cat (scikit-image)"))
    tiles = [captioned(pixels_to_array(model.preprocessing.denormalize(x).clamp(0, 1)), "the cat, as the model sees it")]
    for layer in ("features.3", "features.7", "features.12"):
        last = synthesis.run(synthesis.invert_features(model, x, layer, steps=150, lr=0.05, tv_weight=0.1, tv_beta=2.0))
        tiles.append(captioned(pixels_to_array(last.pixels), f"{layer}: error {last.losses['feature error']:.3f}"))
        print(layer, last.losses)
    row = Image.new("RGB", (sum(t.width for t in tiles) + 6 * (len(tiles) - 1), tiles[0].height), "white")
    for i, tile in enumerate(tiles):
        row.paste(tile, (i * (tile.width + 6), 0))
    row = row.resize((row.width * 3 // 4, row.height * 3 // 4), Image.Resampling.LANCZOS)
    row.quantize(colors=160, method=Image.Quantize.MEDIANCUT).save(ROOT / "docs" / "inversion_squeezenet_cat.png", optimize=True)
    print("wrote docs/inversion_squeezenet_cat.png")


if __name__ == "__main__":
    main()
