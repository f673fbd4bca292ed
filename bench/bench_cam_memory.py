"""Grad-CAM's memory: cnnviz's ``grad_cam`` (autograd only after the layer, ``hooks.graph_from``) against the
plain torch pass that records the graph from the input (the input requires grad, a hook keeps the layer's
output, ``torch.autograd.grad`` to it) and against Captum's ``LayerGradCam``, on VGG-16 (random weights,
``features.29``), 8 images of 224 px.

Memory: each variant runs in a fresh process, after one warm-up forward pass without autograd; the figure
is how far one Grad-CAM map raises the process's peak resident memory (``ru_maxrss``), with the largest
difference of its map from cnnviz's. Time: the variants' median times, interleaved in one process (timed in
separate processes, they differed by up to 20 % from run to run while equal here).

Run: ``.venv/bin/python bench/bench_cam_memory.py [--batch 8] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import median_times  # noqa: E402

LAYER = "features.29"
VARIANTS = ("cnnviz", "torch, graph from the input", "Captum LayerGradCam")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _map(variant: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One Grad-CAM map (N, H, W) of class 3 at ``LAYER``, made the way ``variant`` makes it."""
    from cnnviz import attribution as A
    from cnnviz.hooks import get_module, record_activations

    if variant == "cnnviz":
        return A.grad_cam(model, x, 3, LAYER)
    if variant == "torch, graph from the input":
        with torch.enable_grad(), record_activations(model, [LAYER], keep_graph=True) as acts:
            output = model(x.detach().requires_grad_(True))
            (grad,) = torch.autograd.grad(output[:, 3].sum(), acts[LAYER])
        return A.cam_from_gradient(acts[LAYER].detach(), grad, tuple(x.shape[-2:]))
    from captum.attr import LayerAttribution, LayerGradCam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = LayerGradCam(model, get_module(model, LAYER)).attribute(x, target=3, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[:, 0].detach()


def _setup(batch: int) -> tuple[torch.nn.Module, torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        model(x)  # warm-up: the forward pass's own buffers are in the baseline
    return model, x


def peak_rise(variant: str, batch: int) -> dict:
    """In this (fresh) process: how far one map raises the peak memory, and its difference from cnnviz's map."""
    from cnnviz import attribution as A

    model, x = _setup(batch)
    before = _peak_mb()
    cam = _map(variant, model, x)
    rise = _peak_mb() - before
    return {"rise_mb": rise, "difference": float((cam - A.grad_cam(model, x, 3, LAYER)).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in a child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(peak_rise(args.variant, args.batch)))
        return
    memory = {}
    for variant in VARIANTS:
        child = subprocess.run([sys.executable, __file__, "--variant", variant, "--batch", str(args.batch)],
                               capture_output=True, text=True, check=True)
        memory[variant] = json.loads(child.stdout.strip().splitlines()[-1])
    model, x = _setup(args.batch)
    times = median_times({v: (lambda v=v: _map(v, model, x)) for v in VARIANTS}, args.repeats, ratio_to=VARIANTS[0])
    base = memory[VARIANTS[0]]["rise_mb"]
    print(f"Grad-CAM on VGG-16 (random weights), {LAYER}, {args.batch} × 3 × 224 × 224, "
          f"{torch.get_num_threads()} threads\n")
    print("| variant | peak memory rise (MB) | × cnnviz | median time (s) | × cnnviz | max |map − cnnviz's| |")
    print("|---|---:|---:|---:|---:|---:|")
    for v in VARIANTS:
        print(f"| {v} | {memory[v]['rise_mb']:.0f} | {memory[v]['rise_mb'] / max(base, 1):.1f} | {times[v]:.3f} | "
              f"{times[v + '/ratio']:.2f} | {memory[v]['difference']:.2g} |")


if __name__ == "__main__":
    main()
