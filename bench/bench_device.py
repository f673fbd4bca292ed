"""Accelerator bench: the app's four core computations on every available device, GPU against CPU.

Rows, each on the CPU (always) and on CUDA / Apple MPS when present:

1. one forward + input gradient of the model (the Saliency page's vanilla gradient);
2. occlusion as the Saliency page runs it by default (``precision="auto"``: the device's fast copy;
   incremental engine on the CPU, batched on a GPU), window 16, stride 8;
3. one DeepDream step (one octave, one normalised-ascent step with jitter) at 224 px;
4. one Gatys style step (VGG-16 to conv5_1: content, five Gram matrices, TV, Adam) at 256 px.

Times are medians of interleaved repeats after a warm-up, with the device synchronised. The ratio
column is CPU time / device time (how many times faster the device is).

    python bench/bench_device.py [--model resnet18] [--repeats 5] [--threads 2] [--devices cpu cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnviz import attribution as A  # noqa: E402
from cnnviz.device import cuda_available, describe_device, mps_available, synchronize  # noqa: E402
from cnnviz.models import load_model, pretrained_available  # noqa: E402
from cnnviz.samples import DEFAULT_PHOTO, load_sample  # noqa: E402
from cnnviz.style import loss_network, style_transfer  # noqa: E402
from cnnviz.synthesis import dream, image_pixels  # noqa: E402


def timed(job: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``job`` over ``repeats`` runs after one warm-up, the device synchronised."""
    job()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rows_for(device: torch.device, model_name: str, repeats: int) -> dict[str, float]:
    """Seconds per computation on ``device``."""
    pretrained = pretrained_available(model_name)
    model = load_model(model_name, pretrained=pretrained, device=device)
    vgg = loss_network(pretrained=pretrained_available("vgg16_features"), device=device)
    photo = load_sample(DEFAULT_PHOTO)
    x = model.preprocessing(photo)
    target = A.top_class(model.module, x)
    pixels = image_pixels(model, photo, 224)
    content, style = image_pixels(vgg, photo, 256), image_pixels(vgg, load_sample("coffee (scikit-image)"), 256)
    layer = _deep_layer(model)  # the DeepDream page's default layer

    def gradient() -> None:
        A.vanilla_gradient(model.module, x, target)

    def occlusion() -> None:
        A.occlusion(model.module, x, target, 16, 8)

    def dream_step() -> None:
        for _ in dream(model, pixels, layer, steps=1,
                       octaves=1):
            pass

    def gatys_step() -> None:
        for _ in style_transfer(vgg, content, style, steps=1, size=256):
            pass

    jobs = {"forward + input gradient": gradient, "occlusion (16/8, default)": occlusion,
            "DeepDream step (224 px)": dream_step, "Gatys step (256 px)": gatys_step}
    return {name: timed(job, device, repeats) for name, job in jobs.items()}


def _deep_layer(model) -> str:
    from cnnviz.defaults import teaching_layers
    from cnnviz.layers import layer_table

    layers = teaching_layers(model.module, layer_table(model.module, model.input_size))
    return str(layers.get("dream") or next(iter(layers.values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu and every accelerator present")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if cuda_available() else []) + (["mps"] if mps_available() else [])
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} CPU threads, "
          f"model {args.model}, medians of {args.repeats}")
    results = {}
    for name in devices:
        device = torch.device(name)
        results[name] = rows_for(device, args.model, args.repeats)
        print(f"# {name}: {describe_device(device)}")
    header = ["computation", *(f"{d} ms" for d in devices), *(f"CPU/{d}" for d in devices if d != "cpu")]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in results[devices[0]]:
        cells = [row, *(f"{1000 * results[d][row]:.1f}" for d in devices)]
        if "cpu" in results:
            cells += [f"{results['cpu'][row] / results[d][row]:.1f}x" for d in devices if d != "cpu"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
