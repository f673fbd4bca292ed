"""One optimisation step of each image-generating method vs one plain forward + input-gradient pass.

For each model (ResNet-18 with random weights at 224×224, the bundled small CNN at 32×32) and each
method (class visualization, DeepDream, feature inversion, PGD) this times one step of cnnviz's loop
(``cnnviz.synthesis.optimize``: transforms, hooks, objective, NaN checks, step rule, regularizers,
clamp, losses) and divides by the time of one plain pass: ``model(x)``, one logit,
``torch.autograd.grad`` w.r.t. x. Lucent is not installed and Captum has no optimisation loop, so the
peer is a minimal plain-torch gradient-ascent loop (jitter, normalised step, clamp) for class
visualization. Methods and the plain pass are interleaved within each repeat; medians of repeats.

Run: ``.venv/bin/python bench/bench_synthesis.py`` (prints a Markdown table).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnviz import adversarial, synthesis  # noqa: E402
from cnnviz.models import load_model  # noqa: E402

torch.set_num_threads(2)


def plain_pass(model, x: torch.Tensor, steps: int) -> None:
    """The reference: forward + gradient of one logit w.r.t. the input, ``steps`` times."""
    for _ in range(steps):
        xi = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model.module(xi)[:, 1].sum(), [xi])


def minimal_loop(model, x: torch.Tensor, steps: int) -> None:
    """A peer: the smallest plain-torch class-visualization loop (jitter 2, normalised step, clamp)."""
    pre = model.preprocessing
    pixels = pre.denormalize(x).clamp(0, 1)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        p = pixels.detach().requires_grad_(True)
        dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
        score = model.module(pre.normalize(torch.roll(p, (dy, dx), (2, 3))))[:, 1].sum()
        (grad,) = torch.autograd.grad(score, [p])
        pixels = (pixels + 0.05 * grad / grad.abs().mean()).clamp(0, 1)


def methods(model, x: torch.Tensor, deep_layer: str) -> dict:
    pixels = model.preprocessing.denormalize(x).clamp(0, 1)
    size = x.shape[-1]
    return {
        "class visualization": lambda n: synthesis.run(synthesis.class_visualization(
            model, 1, steps=n, size=size, jitter_pixels=2, l2_weight=1e-4, blur_every_steps=4, every=n)),
        "DeepDream": lambda n: synthesis.run(synthesis.dream(
            model, pixels, deep_layer, steps=n, octaves=1, jitter_pixels=2, every=n)),
        "feature inversion": lambda n: synthesis.run(synthesis.invert_features(
            model, x, deep_layer, steps=n, tv_weight=0.1, every=n)),
        "PGD": lambda n: synthesis.run(adversarial.attack_steps(model, x, 8, method="PGD", steps=n, every=n)),
        "minimal plain-torch loop (peer)": lambda n: minimal_loop(model, x, n),
    }


def timed(fn, n: int) -> float:
    start = time.perf_counter()
    fn(n)
    return (time.perf_counter() - start) / n


def bench(name: str, deep_layer: str, steps: int, repeats: int) -> list[tuple]:
    model = load_model(name, pretrained=False) if name != "small_cnn" else load_model("small_cnn")
    x = torch.rand(1, *model.input_size, generator=torch.Generator().manual_seed(0))
    x = model.preprocessing.normalize(x)
    runs = methods(model, x, deep_layer)
    for fn in runs.values():  # warm up
        fn(1)
    plain_pass(model, x, 2)
    times: dict[str, list[float]] = {k: [] for k in ["plain", *runs]}
    ratios: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            base = timed(lambda n: plain_pass(model, x, n), steps)
            t = timed(fn, steps)
            times["plain"].append(base)
            times[key].append(t)
            ratios[key].append(t / base)
    label = f"{name} ({'random weights' if not model.pretrained else model.weights}), {x.shape[-1]}×{x.shape[-1]}"
    plain_ms = statistics.median(times["plain"]) * 1000
    return [
        (label, key, plain_ms, statistics.median(times[key]) * 1000, statistics.median(ratios[key]))
        for key in runs
    ]


def main() -> None:
    rows = bench("small_cnn", "features.7", steps=20, repeats=7)
    rows += bench("resnet18", "layer3", steps=3, repeats=5)
    print("| model, input | method | plain forward + input gradient (ms) | one step (ms) | ratio (median of repeats) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, key, plain_ms, step_ms, ratio in rows:
        print(f"| {label} | {key} | {plain_ms:.2f} | {step_ms:.2f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
