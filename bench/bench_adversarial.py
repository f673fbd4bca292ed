"""DeepFool's cost per iteration, and how well universal perturbations fool the networks.

1. **One DeepFool iteration** (cnnviz: one forward, the gradients of the K candidate logits in one
   batched backward pass, ``boundary_step``) against the plain-torch reference: one forward and one
   ``torch.autograd.grad`` per candidate class. The peer is torchattacks 3.5.1's DeepFool (one image at a
   time, ``.backward()`` per class, on a private copy of the model), timed per iteration and image.
   Interleaved repeats, medians; ratios are medians of per-round ratios.
2. **Universal perturbations** (Algorithm 1 of Moosavi-Dezfooli et al. 2017) on the trained small CNN:
   v computed on 1,000 MNIST training digits, its fooling rate there (best pass), on the 1,000 held-out
   digits, and of random noise of the same ℓ∞ norm on the held-out digits, at several ξ.
3. The same on the ImageNet models when their trained weights are present: v on random crops of the
   gallery photos, held-out crops, the noise control, and transfer to the other trained ImageNet model.

Run: ``.venv/bin/python bench/bench_adversarial.py [deepfool] [mnist] [imagenet]`` (default: all three;
prints Markdown tables); ``--mnist-levels 48,80 --imagenet-levels 10 --passes 2`` for a shorter run.
"""

from __future__ import annotations

import copy
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnviz import universal  # noqa: E402
from cnnviz.data import mnist_dataset, photo_crops_dataset  # noqa: E402
from cnnviz.deepfool import _candidates, boundary_step, candidate_gradients  # noqa: E402
from cnnviz.models import load_model, pretrained_available  # noqa: E402

torch.set_num_threads(2)
K = 10


def plain_iteration(net, pre, pixels: torch.Tensor, classes: torch.Tensor) -> None:
    """The reference: forward, then one input gradient per candidate class."""
    x = pixels.detach().requires_grad_(True)
    out = net(pre.normalize(x))
    chosen = out.gather(1, classes)
    for k in range(classes.shape[1]):
        torch.autograd.grad(chosen[:, k].sum(), x, retain_graph=k < classes.shape[1] - 1)


def cnnviz_iteration(net, pre, pixels: torch.Tensor, classes: torch.Tensor) -> None:
    """The body of ``deepfool_pixels``' loop: forward, batched candidate gradients, the step."""
    x = pixels.detach().requires_grad_(True)
    with torch.enable_grad():
        out = net(pre.normalize(x))
        grads = candidate_gradients(out, x, classes)
    boundary_step(out.detach(), grads, x.detach(), classes)


class _Normalize(nn.Module):
    def __init__(self, pre):
        super().__init__()
        self.pre = pre

    def forward(self, pixels):
        return self.pre.normalize(pixels)


def torchattacks_iteration(oracle, pixels: torch.Tensor, labels: torch.Tensor) -> None:
    """torchattacks' DeepFool, one step (it works image by image)."""
    oracle(pixels, labels)


def bench_iteration(label: str, model, pixels: torch.Tensor, repeats: int, peer_repeats: int | None = None) -> list[tuple]:
    """Interleaved repeats of the three; the peer runs in the first ``peer_repeats`` rounds only (default: all)."""
    import torchattacks

    net, pre = model.module, model.preprocessing
    with torch.no_grad():
        logits = net(pre.normalize(pixels))
    labels = logits.argmax(1)
    classes = _candidates(logits, labels, min(K, logits.shape[1]))
    oracle = torchattacks.DeepFool(nn.Sequential(_Normalize(pre), copy.deepcopy(net)).eval(), steps=1, overshoot=0.02)
    runs = {
        "plain": lambda: plain_iteration(net, pre, pixels, classes),
        "cnnviz": lambda: cnnviz_iteration(net, pre, pixels, classes),
        "torchattacks": lambda: torchattacks_iteration(oracle, pixels, labels),
    }
    peer_repeats = repeats if peer_repeats is None else peer_repeats
    runs["plain"](), runs["cnnviz"]()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for round_ in range(repeats):
        for name, fn in runs.items():
            if name == "torchattacks" and round_ >= peer_repeats:
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    plain = statistics.median(times["plain"])
    ratio = statistics.median(c / p for c, p in zip(times["cnnviz"], times["plain"]))
    peer = statistics.median(t / c for t, c in zip(times["torchattacks"], times["cnnviz"]))
    n = len(pixels)
    return [
        (label, n, f"{plain * 1000:.1f}", f"{statistics.median(times['cnnviz']) * 1000:.1f}", f"**{ratio:.2f}×**",
         f"{statistics.median(times['torchattacks']) * 1000:.1f}", f"{peer:.2f}× slower")
    ]


def section_deepfool(repeats: int = 7) -> None:
    rows = []
    small = load_model("small_cnn")
    digits = mnist_dataset("test", limit=64, seed=0)
    pixels = universal.dataset_pixels(small, digits)
    rows += bench_iteration("small_cnn (trained), 32×32", small, pixels[:1], repeats)
    rows += bench_iteration("small_cnn (trained), 32×32", small, pixels, max(3, repeats // 2))
    for name in ("squeezenet1_1", "resnet18"):
        trained = pretrained_available(name)
        model = load_model(name, pretrained=trained)
        crops = universal.dataset_pixels(model, photo_crops_dataset(1, seed=0))
        # torchattacks takes the gradient of every one of the 1,000 logits per step: one round only
        rows += bench_iteration(f"{name} ({'trained' if trained else 'random weights'}), 224×224", model, crops, repeats, 1)
    print(f"\nMachine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"K = {K} candidate classes; medians of interleaved repeats\n")
    print("torchattacks' DeepFool differentiates every logit (10 on the small CNN, 1,000 on ImageNet models: one round "
          "timed there), one image at a time; cnnviz only the K candidates, all images at once.\n")
    print("| model, input | images | forward + K input gradients, plain torch (ms) | one cnnviz DeepFool iteration (ms) | ratio | torchattacks DeepFool, one step (ms) | torchattacks / cnnviz |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


def _universal_row(model, train, held_out, xi: float, p: float, passes: int, others=()) -> tuple:
    start = time.perf_counter()
    result = universal.universal_perturbation(model, train, xi, p, target_fooling_rate=0.8, max_passes=passes, seed=0)
    seconds = time.perf_counter() - start
    check = universal.evaluate(model, held_out, result.v, p, seed=0)
    transfers = []
    for other, other_held in others:
        moved = universal.evaluate(other, other_held, result.v, p, seed=0)
        transfers.append(f"{other.name}: {moved.fooling_rate:.1%} (noise {moved.noise_fooling_rate:.1%})")
    rates = ", ".join(f"{r:.1%}" for r in result.fooling_rate_per_pass)
    return (rates, f"{max(result.fooling_rate_per_pass):.1%}", f"**{check.fooling_rate:.1%}**",
            f"{check.noise_fooling_rate:.1%}", "; ".join(transfers) or "—", f"{seconds:.0f} s")


def gradient_universal(model, train: torch.Tensor, xi: float, epochs: int = 5, batch: int = 64, seed: int = 0) -> torch.Tensor:
    """A peer in plain torch: a gradient-based universal perturbation (sign steps of ξ/10 on the mean
    cross-entropy of mini-batches with respect to the clean labels, clipped to ±ξ)."""
    net, pre = model.module, model.preprocessing
    clean = universal.predictions(model, train)
    v = torch.zeros(train.shape[1:])
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for chunk in torch.randperm(len(train), generator=generator).split(batch):
            param = v.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = nn.functional.cross_entropy(net(pre.normalize((train[chunk] + param).clamp(0, 1))), clean[chunk])
                (grad,) = torch.autograd.grad(loss, param)
            v = (v + xi / 10 * grad.sign()).clamp(-xi, xi)
    return v


def section_mnist(levels=(32, 48, 64, 80, 96), passes: int = 3, count: int = 1000) -> None:
    model = load_model("small_cnn")
    train = universal.dataset_pixels(model, mnist_dataset("train", limit=count, seed=0))
    held_out = universal.dataset_pixels(model, mnist_dataset("test", limit=count, seed=0))
    print(f"\nUniversal perturbations, small CNN ({model.weights}): {len(train)} training digits, {len(held_out)} held out, "
          f"ℓ∞, at most {passes} passes, seed 0\n")
    print("| ξ | fooling rate after each pass (training digits) | training (best pass) | held-out | random noise, same ℓ∞ (held-out) | transfer | time | gradient-based peer, held-out |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for level in levels:
        row = _universal_row(model, train, held_out, level / 255, math.inf, passes)
        peer = universal.fooling_rate(model, held_out, gradient_universal(model, train, level / 255))
        print(f"| {level}/255 | " + " | ".join(row) + f" | {peer:.1%} |", flush=True)


def section_imagenet(levels=(8, 10, 16), passes: int = 3, count: int = 64) -> None:
    names = [n for n in ("squeezenet1_1", "efficientnet_lite0") if n in _zoo() and pretrained_available(n)]
    if not names:
        print("\nNo trained ImageNet model is present: skipped.")
        return
    crops_train, crops_held = photo_crops_dataset(count, seed=0), photo_crops_dataset(count, seed=1)
    models = {n: load_model(n, pretrained=True) for n in names}
    print(f"\nUniversal perturbations on ImageNet models: {count} random crops (half mirrored) of the 8 gallery photos to "
          f"compute on, {count} other crops held out (a small sample), ℓ∞, at most {passes} passes, seed 0\n")
    print("| model | ξ | fooling rate after each pass (training crops) | training (best pass) | held-out | random noise, same ℓ∞ (held-out) | transfer (held-out) | time |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- | ---: |")
    for name, model in models.items():
        train = universal.dataset_pixels(model, crops_train)
        held = universal.dataset_pixels(model, crops_held)
        others = [(m, universal.dataset_pixels(m, crops_held)) for n, m in models.items() if n != name]
        for level in levels:
            row = _universal_row(model, train, held, level / 255, math.inf, passes, others)
            print(f"| {name} | {level}/255 | " + " | ".join(row) + " |", flush=True)


def _zoo() -> list[str]:
    from cnnviz.models import MODEL_NAMES

    return MODEL_NAMES


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", help="deepfool, mnist and/or imagenet (default: all three)")
    parser.add_argument("--mnist-levels", default="32,48,64,80,96", help="ξ in pixel levels, comma-separated")
    parser.add_argument("--imagenet-levels", default="8,10,16")
    parser.add_argument("--digits", type=int, default=1000, help="training and held-out digits each")
    parser.add_argument("--crops", type=int, default=64, help="training and held-out crops each")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    chosen = args.sections or ["deepfool", "mnist", "imagenet"]
    if "deepfool" in chosen:
        section_deepfool()
    if "mnist" in chosen:
        section_mnist(tuple(int(v) for v in args.mnist_levels.split(",")), args.passes, args.digits)
    if "imagenet" in chosen:
        section_imagenet(tuple(int(v) for v in args.imagenet_levels.split(",")), args.passes, args.crops)
