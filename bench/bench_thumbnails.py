"""Bench for the Embeddings page's thumbnail mode: 500 images drawn as framed thumbnails in the plot.

Compares the old way (``fig.add_layout_image`` once per image, each call revalidating the layout)
with the page's way (all framed thumbnails as PNG data URIs, set in one layout update), including
the figure's JSON serialisation (what Streamlit sends to the browser). Prints a markdown table.

Run: .venv/bin/python bench/bench_thumbnails.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import plotly.express as px  # noqa: E402

from cnnviz.data import digits_dataset  # noqa: E402
from cnnviz.display import class_style, data_uri, framed_thumbnail  # noqa: E402
from cnnviz.models import load_model  # noqa: E402

N = 500


def scatter(points, labels):
    return px.scatter(x=points[:, 0], y=points[:, 1], color=[str(v) for v in labels])


def old_way(model, dataset, points, labels) -> float:
    start = time.perf_counter()
    fig = scatter(points, labels)
    span = float(np.ptp(points))
    for i, (x, y) in enumerate(points):
        thumb = model.preprocessing.view(dataset.images[i]).convert("RGB").resize((32, 32))
        fig.add_layout_image(source=thumb, x=float(x), y=float(y), xref="x", yref="y", sizex=span * 0.035,
                             sizey=span * 0.035, xanchor="center", yanchor="middle", layer="above")
    fig.to_json()
    return time.perf_counter() - start


def new_way(model, dataset, points, labels, thumbs=None) -> tuple[float, list]:
    start = time.perf_counter()
    if thumbs is None:
        thumbs = [data_uri(framed_thumbnail(model.preprocessing.view(dataset.images[i]), class_style(int(labels[i]))[0]))
                  for i in range(len(dataset))]
    fig = scatter(points, labels)
    span = float(np.ptp(points))
    fig.update_layout(images=[dict(source=t, x=float(x), y=float(y), xref="x", yref="y", sizex=span * 0.035,
                                   sizey=span * 0.035, xanchor="center", yanchor="middle", layer="above")
                              for t, (x, y) in zip(thumbs, points)])
    fig.to_json()
    return time.perf_counter() - start, thumbs


def main() -> None:
    model = load_model("small_cnn")
    dataset = digits_dataset(limit=N)
    points = np.random.default_rng(0).normal(size=(N, 2))
    labels = np.asarray(dataset.labels)
    scatter(points, labels).to_json()  # plotly's first figure loads its templates: not part of either way
    new_first, thumbs = new_way(model, dataset, points, labels)
    new_cached, _ = new_way(model, dataset, points, labels, thumbs)
    old = old_way(model, dataset, points, labels)
    print(f"| {N} thumbnails | seconds | vs old |\n|---|---|---|")
    print(f"| old: add_layout_image per image | {old:.2f} | 1.0× |")
    print(f"| new: framed data URIs, one layout update (first time) | {new_first:.2f} | {old / new_first:.1f}× faster |")
    print(f"| new, thumbnails cached (every later rerun) | {new_cached:.2f} | {old / new_cached:.1f}× faster |")


if __name__ == "__main__":
    main()
