"""Train the two shipped fast style networks: one with instance norm, one with batch norm.

Ulyanov et al. (2016) showed that replacing batch norm by instance norm in Johnson et al.'s
network makes fast stylisation much better. A live run in the app is too short to show it, so
this script trains both once, with the same seed, style, crops and settings, and ships them:

    python assets/train_style_networks.py            # both, one after the other
    python assets/train_style_networks.py instance   # or one of them

Style: scikit-image's immunohistochemistry image; content: random crops of the gallery photos.
Settings: ``cnnviz.style.training.SHIPPED`` (width 16, 64-px crops, batch 4, 400 Adam steps,
seed 0); the Style > "Train a style network" page's live run starts with the same settings, so its
loss curve retraces the beginning of the shipped curves. Each network is saved as float16
safetensors (under 1 MB) with its settings and loss history in the metadata, every 50 steps and
at the end.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnviz.style.training import SHIPPED, SHIPPED_STYLE, shipped_path, shipped_style_pixels, train_style_network  # noqa: E402
from cnnviz.style.transformer import save_checkpoint  # noqa: E402
from cnnviz.style.vgg import loss_network  # noqa: E402


def train(norm: str) -> Path:
    from cnnviz.data import photos_dataset

    settings = replace(SHIPPED, norm=norm)
    model = loss_network(pretrained=True)
    path = shipped_path(norm)
    start = time.perf_counter()
    for step in train_style_network(model, shipped_style_pixels(), photos_dataset().images, settings, max_steps=settings.steps):
        if step.step % 10 == 0:
            print(f"{norm}: step {step.step}, loss {step.losses['loss']:.3f}, {time.perf_counter() - start:.0f} s, "
                  f"CPU {time.process_time():.0f} s", flush=True)
        if step.step % 50 == 0 or step.step == settings.steps:
            meta = {"settings": asdict(settings), "style": SHIPPED_STYLE, "steps_done": step.step,
                    "history": [{k: round(v, 5) for k, v in h.items()} for h in step.history]}
            save_checkpoint(step.network, path, meta)
            print(f"{norm}: step {step.step}/{settings.steps}, loss {step.losses['loss']:.3f}, "
                  f"{time.perf_counter() - start:.0f} s, saved {path.name} ({path.stat().st_size // 1024} KB)", flush=True)
    return path


if __name__ == "__main__":
    torch.set_num_threads(1)  # a script of its own: two of them may run side by side
    for norm in sys.argv[1:] or ["instance", "batch"]:
        train(norm)
