"""Style benchmarks, ratios within one run.

1. One Gatys step (cnnviz's loop: content, five Gram matrices, TV, Adam, clamp) against one plain
   VGG-16 forward + input-gradient pass cut at the deepest layer used (relu5_1), at each size.
   Bar: <= 1.2x. The measured seconds per step are what ``cnnviz.style.gatys.SECONDS_PER_STEP`` holds.
2. The native 26-style network against onnxruntime on the same 512 x 512 image, same thread count.
   Bars: <= 1.2x onnxruntime, and < 0.5 s.

    python bench/bench_style.py [--sizes 128 256 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnviz.samples import load_sample  # noqa: E402
from cnnviz.style import STYLE_LAYERS, blend_weights, loss_network, multistyle_network, style_transfer, stylize  # noqa: E402
from cnnviz.style.multistyle import SOURCE  # noqa: E402
from cnnviz.style.vgg import module_name  # noqa: E402
from cnnviz.synthesis import image_pixels  # noqa: E402


def plain_step(cut: nn.Module, normalize, x: torch.Tensor) -> None:
    p = x.detach().requires_grad_(True)
    out = cut(normalize(p))
    torch.autograd.grad(out.pow(2).sum(), p)


def gatys_rows(sizes: list[int], repeats: int) -> list[tuple]:
    vgg = loss_network(pretrained=True)
    deepest = max(int(module_name(layer)) for layer in STYLE_LAYERS)
    cut = nn.Sequential(*list(vgg.module)[: deepest + 1])  # the same modules, up to relu5_1 (bench only)
    cat, brick = load_sample("cat (scikit-image)"), load_sample("coffee (scikit-image)")
    rows = []
    for size in sizes:
        content, style = image_pixels(vgg, cat, size), image_pixels(vgg, brick, size)
        plain_times, step_times = [], []
        steps = style_transfer(vgg, content, style, size=size, steps=repeats * 2 + 2)
        next(steps)  # warm-up: targets, first step
        x = content.clone()
        plain_step(cut, vgg.preprocessing.normalize, x)
        for _ in range(repeats):  # interleaved: one plain pass, two loop steps
            t = time.perf_counter()
            plain_step(cut, vgg.preprocessing.normalize, x)
            plain_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            next(steps)
            next(steps)
            step_times.append((time.perf_counter() - t) / 2)
        plain, step = statistics.median(plain_times), statistics.median(step_times)
        rows.append((f"{content.shape[3]}×{content.shape[2]}", plain, step, step / plain))
    return rows


def multistyle_row(repeats: int) -> tuple:
    import onnxruntime as ort

    from cnnviz.sources import SOURCES, cache_root, fetch_source, read_member

    fetch_source(SOURCE, say=lambda _: None)
    source = SOURCES[SOURCE]
    model = read_member(cache_root() / "archives" / source.filename, source.member)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    x = image_pixels(loss_network(pretrained=False), load_sample("cat (scikit-image)"), 512)
    x = torch.nn.functional.interpolate(x, size=(512, 512), mode="bilinear", antialias=True).clamp(0, 1)
    w = blend_weights(7)
    net = multistyle_network()
    feeds = {"image": x.numpy(), "style_weights": w.numpy()}
    stylize(x, w, network=net)
    session.run(None, feeds)
    ours, theirs, ratios = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        out = stylize(x, w, network=net)
        a = time.perf_counter() - t
        t = time.perf_counter()
        ref = session.run(None, feeds)[0]
        b = time.perf_counter() - t
        ours.append(a), theirs.append(b), ratios.append(a / b)
    diff = float((out - torch.from_numpy(ref)).abs().max())
    return statistics.median(ours), statistics.median(theirs), statistics.median(ratios), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime

    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; medians of {args.repeats} interleaved repeats.\n")
    print("| VGG-16 (HED weights), content × style | plain forward + input gradient to relu5_1 | one Gatys step (Adam) | ratio | bar |")
    print("| --- | ---: | ---: | ---: | --- |")
    for size, plain, step, ratio in gatys_rows(args.sizes, args.repeats):
        print(f"| {size} | {plain * 1000:.0f} ms | {step * 1000:.0f} ms | **{ratio:.2f}×** | ≤ 1.2× |")
    ours, theirs, ratio, diff = multistyle_row(args.repeats)
    print("\n| 26-style network, 512×512, style 7 | time | ratio | bar |")
    print("| --- | ---: | ---: | --- |")
    print(f"| onnxruntime (CPU provider) | {theirs * 1000:.0f} ms | 1.00 (reference) | |")
    print(f"| cnnviz native `stylize` (channels-last, fused instance norm) | {ours * 1000:.0f} ms | **{ratio:.2f}×** | ≤ 1.2×, < 500 ms |")
    print(f"\nmax |cnnviz − onnxruntime| = {diff:.1e}")


if __name__ == "__main__":
    main()
