"""Benchmark of cnnviz.live on SqueezeNet 1.1 (random weights; the speed is that of trained weights).

1. Per frame: ``process_frame`` (top-5 + one layer's feature maps + Grad-CAM or the vanilla gradient,
   from a 320×240 camera-sized frame: preprocessing, one forward pass, the gradient, the drawn
   composite; on the channels-last live copy, ``cnnviz.live.live_network``, and once on the model itself) against one plain forward + input-gradient pass of the preprocessed 224×224 input; and
   the same three results the obvious way, as the still-image pages compute them (``predict`` +
   ``feature_maps`` + ``grad_cam``: three passes). Bar: ≤ 1.3× of forward + input gradient.
2. In the browser (``--browser``, default on): the app on its own server, Chromium's fake camera
   streaming to the Live page over WebRTC, SqueezeNet with Grad-CAM; the frames-per-second figure the
   page shows, read every half second. Bar: ≥ 10 fps.

Run: ``.venv/bin/python bench/bench_live.py [--repeats 30] [--seconds 20] [--no-browser]``. Prints
markdown. Timings are medians of interleaved repeats; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cnnviz.attribution import default_cam_layer, grad_cam  # noqa: E402
from timing import median_times  # noqa: E402
from cnnviz.features import feature_maps  # noqa: E402
from cnnviz.hooks import input_gradient, leftover_state  # noqa: E402
from cnnviz.live import cap_frame, process_frame  # noqa: E402
from cnnviz.models import load_model, predict  # noqa: E402
from cnnviz.samples import load_sample  # noqa: E402

warnings.filterwarnings("ignore")
LAYER = "features.8"  # the Live page's default for SqueezeNet: the middle of its spatial layers


def per_frame(repeats: int) -> list[tuple[str, float, float, str]]:
    model = load_model("squeezenet1_1", pretrained=False)
    net = model.module
    frame = np.asarray(cap_frame(load_sample("coffee (scikit-image)")).resize((320, 240)))
    x = model.preprocessing(cap_frame(frame))
    cam = default_cam_layer(net, x)
    with torch.inference_mode():
        target = int(net(x).argmax())

    def forward() -> None:
        with torch.inference_mode():
            net(x)

    def three_passes() -> None:
        predict(model, x, k=5)
        feature_maps(net, x, [LAYER])
        grad_cam(net, x, target, cam)

    jobs = {
        "forward": forward,
        "reference": lambda: input_gradient(net, x, lambda out: out[:, target]),
        "gradcam": lambda: process_frame(model, frame, LAYER, 0, "grad_cam", cam_layer=cam),
        "gradcam, no drawing": lambda: process_frame(model, frame, LAYER, 0, "grad_cam", cam_layer=cam, draw=False),
        "gradcam, model itself": lambda: process_frame(model, frame, LAYER, 0, "grad_cam", cam_layer=cam, fast=False),
        "vanilla": lambda: process_frame(model, frame, LAYER, 0, "vanilla_gradient"),
        "none": lambda: process_frame(model, frame, LAYER, 0, "none"),
        "three passes": three_passes,
    }
    t = median_times(jobs, repeats, "reference")
    assert leftover_state(net) == []
    labels = {
        "forward": ("plain forward (inference mode), 224×224", ""),
        "reference": ("plain forward + gradient w.r.t. the input (torch.autograd.grad), 224×224", "reference"),
        "gradcam": (f"**process_frame, Grad-CAM ({cam})**: top-5 + {LAYER} maps + map, drawn on the 320×240 frame",
                    "bar ≤ 1.3×"),
        "gradcam, no drawing": ("process_frame, Grad-CAM, without drawing the composite", ""),
        "gradcam, model itself": ("process_frame, Grad-CAM, drawn, on the shared model itself (`fast=False`)",
                                  "without the live copy"),
        "vanilla": ("process_frame, vanilla gradient, drawn", "bar ≤ 1.3×"),
        "none": ("process_frame, no saliency (inference mode), drawn", ""),
        "three passes": (f"the still-image way: predict + feature_maps({LAYER}) + grad_cam, three passes", "for comparison"),
    }
    return [(labels[name][0], t[name], t[f"{name}/ratio"], labels[name][1]) for name in jobs]


def in_browser(seconds: float) -> tuple[list[float], str]:
    """Frames per second shown by the Live page with Chromium's fake camera, SqueezeNet + Grad-CAM."""
    from playwright.sync_api import sync_playwright

    from conftest import CHROMIUM, serve_app
    import tempfile

    from test_browser_live import (FAKE_CAMERA, metric, open_live, sample_fps, start_stream, wait_for_frames,
                                   write_camera_file)

    with (tempfile.TemporaryDirectory() as folder, serve_app("bench_live") as url, sync_playwright() as p):
        video = write_camera_file(Path(folder) / "camera.y4m")
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                                    *FAKE_CAMERA, f"--use-file-for-fake-video-capture={video}"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_live(page, url, "squeezenet1_1")
        start_stream(page)
        wait_for_frames(page)
        time.sleep(3)
        samples = sample_fps(page, seconds)
        latency = metric(page, "Latency")
        browser.close()
    return samples, latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-browser", dest="browser", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = per_frame(args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, load average {load:.1f} at the end; SqueezeNet 1.1 with random weights, one "
          f"frame; medians of {args.repeats} interleaved repeats, ratios are medians of per-round ratios.\n")
    print("| per frame, SqueezeNet 1.1 | median time | ratio to forward + input gradient | note |")
    print("| --- | ---: | ---: | --- |")
    for name, seconds, ratio, note in rows:
        print(f"| {name} | {seconds * 1000:.1f} ms | {ratio:.2f}× | {note} |")
    if args.browser:
        samples, latency = in_browser(args.seconds)
        print(f"\nLive page in Chromium with a fake camera, SqueezeNet 1.1 + Grad-CAM, {args.seconds:.0f} s: "
              f"median **{statistics.median(samples):.1f} frames per second** (min {min(samples):.1f}, max "
              f"{max(samples):.1f}), latency {latency} at the end; bar ≥ 10 fps. Load average "
              f"{os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
