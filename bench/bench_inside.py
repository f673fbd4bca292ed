"""Bench for "Look inside": feature extraction vs a plain batched forward loop (and torchvision's
create_feature_extractor), and t-SNE of 5,000 points. Prints a markdown table.

Run: .venv/bin/python bench/bench_inside.py
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

from cnnviz.data import digits_dataset  # noqa: E402
from cnnviz.features import embed_2d, extract_features, penultimate_layer  # noqa: E402
from cnnviz.models import load_model  # noqa: E402

torch.set_num_threads(2)
REPEATS = int(os.environ.get("BENCH_REPEATS", "9"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_loop(model, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """What a student writes: the whole forward pass per batch, keeping the logits' input via the model."""
    out = []
    with torch.inference_mode():
        for a in range(0, len(x), batch_size):
            out.append(model.module(x[a : a + batch_size]))
    return torch.cat(out).numpy()


def fx_loop(extractor, node: str, x: torch.Tensor, batch_size: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for a in range(0, len(x), batch_size):
            out.append(extractor(x[a : a + batch_size])[node].flatten(1))
    return torch.cat(out).numpy()


def compare(label: str, model, x: torch.Tensor, batch_size: int, rows: list[str]) -> None:
    linear = penultimate_layer(model.module)
    # the penultimate representation is the input of the last linear layer: the output of the node feeding it
    from torchvision.models.feature_extraction import get_graph_node_names

    nodes = get_graph_node_names(model.module)[1]
    node = nodes[nodes.index(linear) - 1]
    extractor = create_feature_extractor(model.module, [node])
    runs = {"cnnviz": [], "plain": [], "fx": []}
    extract_features(model, x[:batch_size], batch_size=batch_size)  # warm-up
    tasks = {
        "plain": lambda: plain_loop(model, x, batch_size),
        "cnnviz": lambda: extract_features(model, x, batch_size=batch_size),
        "fx": lambda: fx_loop(extractor, node, x, batch_size),
    }
    for r in range(REPEATS):  # interleaved, order rotated each round
        names = list(tasks)[r % 3:] + list(tasks)[: r % 3]
        for name in names:
            runs[name].append(timed(tasks[name]))
    med = {k: statistics.median(v) for k, v in runs.items()}
    rows.append(
        f"| extract_features, {label} | {med['cnnviz']:.2f} s | {med['plain']:.2f} s | {med['fx']:.2f} s | "
        f"**{med['cnnviz'] / med['plain']:.2f}×** | {med['fx'] / med['plain']:.2f}× | ≤ 1.2× |"
    )


def shifted_digit_features(model, n: int) -> tuple[np.ndarray, str]:
    digits = digits_dataset()
    x = digits.batch(model.preprocessing, range(len(digits)))
    shifts = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1)]
    xs = torch.cat([torch.roll(x, s, dims=(2, 3)) for s in shifts])[:n]
    return extract_features(model, xs, batch_size=256), (
        f"small CNN penultimate features (2,048-d) of the 1,797 digits and copies shifted by one pixel, first {n}"
    )


def main() -> None:
    rows: list[str] = []
    small = load_model("small_cnn")
    digits = digits_dataset()
    x_digits = digits.batch(small.preprocessing, range(len(digits)))
    compare("small CNN, 1,797 digits, batch 256", small, x_digits, 256, rows)
    resnet = load_model("resnet18", pretrained=False)
    x_res = torch.randn(256, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    compare("resnet18 (random weights), 256 images 128×128, batch 64", resnet, x_res, 64, rows)

    features, what = shifted_digit_features(small, 5000)
    tsne_rows = []
    for max_iter in (500, 1000):
        seconds = timed(lambda: embed_2d(features, "tsne", perplexity=30, max_iter=max_iter, seed=0))
        tsne_rows.append(f"| t-SNE of 5,000 points, perplexity 30, {max_iter} iterations (scikit-learn Barnes-Hut, "
                         f"after PCA to 50-d) | {seconds:.1f} s | | | | | < 60 s |")
    pca = timed(lambda: embed_2d(features, "pca"))
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), torch threads 2, "
          f"torch {torch.__version__}; medians of {REPEATS} interleaved runs.\n")
    print("| task | cnnviz | plain forward loop | create_feature_extractor loop | cnnviz / plain | peer / plain | bar |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows + tsne_rows:
        print(row)
    print(f"| PCA of the same 5,000 points | {pca:.2f} s | | | | | |")
    print(f"\nt-SNE input: {what}.")


if __name__ == "__main__":
    main()
