"""The project's own small CNN (TinyVGG style) and its seeded training on scikit-learn's digits.

Digits are 8×8 images with 17 gray levels; we show and train on them upscaled to 32×32 so the
feature maps of both blocks stay large enough to look at. Training data goes through the very
pipeline the app uses (``digit_image`` -> ``Preprocessing``), so what the app feeds the model is
what it learned from.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from .preprocessing import Preprocessing
from .randomness import seeded

DIGITS_SIZE = 32
CLASS_NAMES = [str(i) for i in range(10)]
ASSETS = Path(__file__).resolve().parent.parent / "assets"
CHECKPOINT = ASSETS / "small_cnn_digits.safetensors"
HISTORY = ASSETS / "small_cnn_digits_history.safetensors"


class SmallCNN(nn.Module):
    """TinyVGG: two blocks of conv-ReLU-conv-ReLU-maxpool, then one linear layer.

    Input (N, in_channels, 32, 32) -> logits (N, num_classes). Layer names follow torchvision's
    VGG (``features.0`` ... ``classifier.1``), so the same tools address both.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, size: int = DIGITS_SIZE):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def digit_image(values: np.ndarray, size: int = DIGITS_SIZE) -> Image.Image:
    """One scikit-learn digit (8×8, values 0..16, ink high) as a light-on-dark RGB image."""
    gray = Image.fromarray((np.asarray(values, dtype=np.float64).reshape(8, 8) * (255 / 16)).round().astype(np.uint8))
    return gray.resize((size, size), Image.Resampling.BILINEAR).convert("RGB")


@lru_cache(maxsize=1)
def _digits() -> tuple[tuple[Image.Image, ...], np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return tuple(digit_image(row) for row in digits.data), digits.target.astype(np.int64)


def load_digits_images() -> tuple[list[Image.Image], np.ndarray]:
    """All 1,797 scikit-learn digits as 32×32 images, with their labels (N,)."""
    images, labels = _digits()
    return list(images), labels.copy()


def digits_split(seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train / held-out indices into ``load_digits_images()``."""
    from sklearn.model_selection import train_test_split

    _, labels = load_digits_images()
    return train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels)


def digits_preprocessing(mean: float, std: float) -> Preprocessing:
    return Preprocessing(
        resize=DIGITS_SIZE, crop=DIGITS_SIZE, mean=(mean,), std=(std,), invert_light_background=True
    )


@dataclass
class TrainingResult:
    model: SmallCNN
    preprocessing: Preprocessing
    test_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    snapshots: list[dict[str, Tensor]] = field(default_factory=list)


def _random_shift(x: Tensor, generator: torch.Generator, max_shift: int = 2) -> Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero fill); a light augmentation."""
    padded = nn.functional.pad(x, [max_shift] * 4, value=float(x.min()))
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    return out


def train_small_cnn(
    epochs: int = 12,
    seed: int = 0,
    lr: float = 2e-3,
    batch_size: int = 64,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainingResult:
    """Train ``SmallCNN`` on the digits' training split, seeded; evaluate on the held-out split.

    Args:
        epochs: passes over the 1,437 training images.
        seed: seeds the split, the initialisation, the shuffling and the augmentation.
        on_epoch: called after each epoch with {"epoch", "loss", "train_acc", "test_acc"}.

    Returns:
        The trained model (eval mode), its preprocessing, held-out accuracy, per-epoch history
        and a state-dict snapshot before training and after each epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_digits_images()
    train_idx, test_idx = digits_split(seed)
    pixels = torch.stack([torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0) for im in images])[:, None]
    mean, std = float(pixels[train_idx].mean()), float(pixels[train_idx].std())
    pre = digits_preprocessing(mean, std)
    x = pre.normalize(pixels)
    y = torch.from_numpy(labels)
    with seeded(seed):  # the initialisation of torch.manual_seed(seed), without seeding the global RNG
        model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    snapshot = lambda: {k: v.detach().clone() for k, v in model.state_dict().items()}  # noqa: E731
    result = TrainingResult(model, pre, 0.0, snapshots=[snapshot()])
    train_t = torch.from_numpy(train_idx)
    for epoch in range(1, epochs + 1):
        model.train()
        order = train_t[torch.randperm(len(train_t), generator=generator)]
        total_loss, correct = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs = _random_shift(x[batch], generator)
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y[batch]).sum())
        scheduler.step()
        model.eval()
        with torch.no_grad():
            test_acc = float((model(x[test_idx]).argmax(1) == y[test_idx]).float().mean())
        row = {"epoch": epoch, "loss": total_loss / len(order), "train_acc": correct / len(order), "test_acc": test_acc}
        result.history.append(row)
        result.snapshots.append(snapshot())
        if on_epoch:
            on_epoch(row)
    model.eval()
    for p in model.parameters():
        p.grad = None
    result.test_accuracy = result.history[-1]["test_acc"]
    return result


def save_training(result: TrainingResult, checkpoint: Path = CHECKPOINT, history: Path = HISTORY, seed: int = 0) -> None:
    """Write the checkpoint (safetensors, metadata included) and the per-epoch snapshots."""
    meta = {
        "architecture": "SmallCNN",
        "dataset": "scikit-learn digits, upscaled to 32x32",
        "mean": json.dumps(result.preprocessing.mean),
        "std": json.dumps(result.preprocessing.std),
        "class_names": json.dumps(CLASS_NAMES),
        "test_accuracy": f"{result.test_accuracy:.4f}",
        "seed": str(seed),
        "history": json.dumps(result.history),
    }
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(checkpoint), metadata=meta)
    flat = {f"epoch_{i:02d}.{k}": v.contiguous() for i, snap in enumerate(result.snapshots) for k, v in snap.items()}
    save_file(flat, str(history), metadata={"epochs": str(len(result.snapshots) - 1)})


def load_history(path: Path = HISTORY) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """Yield (epoch, state dict) for the bundled training snapshots; epoch 0 is the initialisation."""
    from safetensors.torch import load_file

    flat = load_file(str(path))
    epochs = sorted({int(k.split(".")[0][len("epoch_"):]) for k in flat})
    for epoch in epochs:
        prefix = f"epoch_{epoch:02d}."
        yield epoch, {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def main(seed: int = 0, epochs: int = 12) -> TrainingResult:
    """Train with the given seed and write the assets; prints progress."""
    start = time.perf_counter()
    result = train_small_cnn(
        epochs=epochs,
        seed=seed,
        on_epoch=lambda r: print(
            f"epoch {r['epoch']:2d}  loss {r['loss']:.4f}  train {r['train_acc']:.3f}  held-out {r['test_acc']:.3f}"
        ),
    )
    save_training(result, seed=seed)
    print(f"held-out accuracy {result.test_accuracy:.4f}; {time.perf_counter() - start:.1f} s; wrote {CHECKPOINT}")
    return result
