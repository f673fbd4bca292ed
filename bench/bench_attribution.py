"""Benchmark of cnnviz.attribution: gradient methods vs one forward + input-gradient pass, and
occlusion's engines (batched, incremental, approximate) vs Captum's Occlusion, on ResNet-18 (random
weights, 1x3x224x224), the trained SqueezeNet 1.1 and the trained small CNN.

Run: ``.venv/bin/python bench/bench_attribution.py [--repeats 5] [--windows 32/16,16/8] [--curve 0.2,0.3]``.
Prints a markdown table. bfloat16 rows only where the CPU has native bfloat16 (emulated, it is 5-8x slower).
Timings are medians of interleaved repeats, so a shared, noisy CPU affects all rows alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnviz import attribution as A  # noqa: E402
from timing import median_times  # noqa: E402
from cnnviz.display import rank_correlation  # noqa: E402
from cnnviz.hooks import input_gradient, leftover_state  # noqa: E402
from cnnviz.models import load_model  # noqa: E402
from cnnviz.samples import load_sample  # noqa: E402

warnings.filterwarnings("ignore")


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


def occlusion_rows(label: str, model: torch.nn.Module, x: torch.Tensor, window: int, stride: int, repeats: int,
                   curve: tuple[float, ...] = ()) -> list[tuple[str, float, str, str]]:
    """Captum's Occlusion (ppe 1 and 16) against cnnviz's engines in one interleaved run, each map
    with its Pearson correlation to the exact fp32 map; ``curve``: extra tolerances of the
    approximate mode."""
    from captum.attr import Occlusion

    with torch.inference_mode():
        target = int(model(x).argmax())
    c = x.shape[1]
    captum = Occlusion(model)
    maps: dict[str, torch.Tensor] = {}
    notes: dict[str, str] = {}

    def captum_run(ppe: int):
        return lambda: captum.attribute(x, target=target, sliding_window_shapes=(c, window, window),
                                        strides=(c, stride, stride), baselines=0, perturbations_per_eval=ppe)

    def ours(name: str, **options):
        def job():
            result = A.occlusion_map(model, x, target, window, stride, **options)
            maps[name], notes[name] = result.heat, result.note
        return job

    bf16 = A.bf16_supported()  # emulated bfloat16 is 5-8x slower than float32: its rows say nothing then
    jobs = {
        "captum1": captum_run(1),
        "captum16": captum_run(16),
        "batched fp32": ours("batched fp32", precision="float32", engine="batched"),
        **({"batched bf16": ours("batched bf16", precision="bfloat16", engine="batched")} if bf16 else {}),
        "incremental fp32": ours("incremental fp32", precision="float32", engine="incremental"),
        **({"incremental bf16": ours("incremental bf16", precision="bfloat16", engine="incremental", tolerance=0.0)}
           if bf16 else {}),
        "default": ours("default"),
        **{f"tolerance {t}": ours(f"tolerance {t}", precision="float32", tolerance=t) for t in curve},
    }
    t = median_times(jobs, repeats, ratio_to="captum1")
    exact = maps["batched fp32"]
    captum_map = captum_run(1)()[:, 0]
    n = len(A.occlusion_positions(tuple(x.shape[-2:]), (window, window), (stride, stride)))

    def fidelity(name: str) -> str:
        return f"Pearson {pearson(maps[name], exact):.4f} vs exact fp32"

    def speed(name: str, bold: bool = False) -> str:
        text = f"{1 / t[f'{name}/ratio']:.2f}× faster"
        return f"**{text}**" if bold else text

    rows = [
        (f"{label}, {n} windows {window}/{stride}: Captum Occlusion, perturbations_per_eval=1", t["captum1"],
         "1.00 (reference)", f"max abs diff to cnnviz exact {float((captum_map - exact).abs().max()):.1e}"),
        (f"{label}: Captum Occlusion, perturbations_per_eval=16", t["captum16"], speed("captum16"), ""),
        (f"{label}: cnnviz batched, exact fp32 (the engine before incremental inference)", t["batched fp32"],
         speed("batched fp32"), "exact"),
        *([(f"{label}: cnnviz batched, bf16 copy with batch norms folded", t["batched bf16"], speed("batched bf16"),
            fidelity("batched bf16"))] if bf16 else []),
        (f"{label}: cnnviz incremental, exact fp32", t["incremental fp32"], speed("incremental fp32"),
         f"{fidelity('incremental fp32')}; {notes['incremental fp32']}"),
        *([(f"{label}: cnnviz incremental, exact bf16", t["incremental bf16"], speed("incremental bf16"),
            f"{fidelity('incremental bf16')}; {notes['incremental bf16']}")] if bf16 else []),
        (f"{label}: **cnnviz occlusion, default**", t["default"], speed("default", True),
         f"**{fidelity('default')}**; {notes['default']}"),
    ]
    rows += [(f"{label}: cnnviz approximate, fp32, tolerance {tol}", t[f"tolerance {tol}"], speed(f"tolerance {tol}"),
              f"{fidelity(f'tolerance {tol}')}; {notes[f'tolerance {tol}']}") for tol in curve]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", default="32/16,16/8", help="occlusion window/stride pairs on ResNet-18 and SqueezeNet")
    parser.add_argument("--curve", default="0.05,0.1,0.2,0.3,0.5", help="tolerances of the approximate mode (at the first pair)")
    parser.add_argument("--no-gradients", action="store_true", help="skip the gradient methods' rows")
    parser.add_argument("--no-small", action="store_true", help="skip the small CNN's rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    resnet = load_model("resnet18", pretrained=False)
    model = resnet.module
    x = resnet.preprocessing(load_sample("cat (scikit-image)"))
    with torch.inference_mode():
        target = int(model(x).argmax())
    objective = A.logit_objective(target)

    def forward():
        with torch.inference_mode():
            model(x)

    grad_jobs = {
        "forward": forward,
        "forward+input-grad": lambda: input_gradient(model, x, objective),
        "vanilla": lambda: A.vanilla_gradient(model, x, target),
        "guided": lambda: A.guided_backprop(model, x, target),
        "gradcam": lambda: A.grad_cam(model, x, target, "layer4"),
    }
    t = {} if args.no_gradients else median_times(grad_jobs, max(args.repeats * 5, 15), ratio_to="forward+input-grad")
    ref = t.get("forward+input-grad")
    rows = [] if args.no_gradients else [
        ("ResNet-18: plain forward (inference mode)", t["forward"], f"{t['forward/ratio']:.2f}× fwd+grad", ""),
        ("ResNet-18: plain forward + gradient w.r.t. input (torch.autograd.grad)", ref, "1.00 (reference)", ""),
        ("ResNet-18: cnnviz vanilla_gradient", t["vanilla"], f"**{t['vanilla/ratio']:.2f}×** fwd+grad", "bar ≤ 1.15×"),
        ("ResNet-18: cnnviz guided_backprop", t["guided"], f"**{t['guided/ratio']:.2f}×** fwd+grad", "bar ≤ 1.15×"),
        ("ResNet-18: cnnviz grad_cam (layer4)", t["gradcam"], f"**{t['gradcam/ratio']:.2f}×** fwd+grad", "bar ≤ 1.15×"),
    ]
    pairs = [tuple(int(v) for v in pair.split("/")) for pair in args.windows.split(",") if pair]
    curve = tuple(float(v) for v in args.curve.split(",") if v)
    squeezenet = load_model("squeezenet1_1")
    squeeze_label = f"SqueezeNet 1.1 ({squeezenet.label.split(' · ')[-1]})"
    squeeze_x = squeezenet.preprocessing(load_sample("cat (scikit-image)"))
    for label, net, image in (("ResNet-18", model, x), (squeeze_label, squeezenet.module, squeeze_x)):
        for k, (window, stride) in enumerate(pairs):  # the curve at the first pair; fewer repeats for smaller windows
            rows += occlusion_rows(label, net, image, window, stride, args.repeats if k == 0 else max(1, args.repeats - 1),
                                   curve if k == 0 else ())
    small = load_model("small_cnn")
    if not args.no_small:
        digit = small.preprocessing(load_sample("digit 3"))
        rows += occlusion_rows(f"small CNN ({small.label.split(' · ')[-1]}, 32×32)", small.module, digit, 8, 4, args.repeats)
    assert leftover_state(model) == [] and leftover_state(small.module) == [] and leftover_state(squeezenet.module) == []

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, bf16 native: {A.bf16_supported()}, medians of {args.repeats} interleaved repeats "
          "(gradient rows: 5× more); ratios are medians of per-round ratios; ResNet-18 with random weights (no pretrained file offline), 1×3×224×224.\n")
    print("| measurement | median time | ratio | note |")
    print("| --- | ---: | --- | --- |")
    for name, seconds, ratio, note in rows:
        print(f"| {name} | {seconds * 1000:.0f} ms | {ratio} | {note} |")


if __name__ == "__main__":
    main()
