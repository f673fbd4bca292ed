"""Transfer learning: reuse an ImageNet network's features on a small dataset.

Two ways (Yosinski et al., 2014; Razavian et al., 2014; CS231n): freeze every feature block and
train only a new head (global average pooling + a linear layer), or also fine-tune the last block.
The frozen part runs once per image (its outputs are cached), so both train in seconds on a CPU.
The same head on a random-weight network, and the small CNN trained from scratch, are the baselines.
The shared model is only read (eval mode, no gradients); the fine-tuned block is a private copy.
"""

from __future__ import annotations


import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageDataset
from ..models import LoadedModel
from .data import dataset_data, stratified_split
from .loop import TrainConfig, train
from .network import private_copy

TRANSFER_MODES = ("head", "finetune")


@dataclass
class TransferRecord:
    """One epoch of one way of training."""

    method: str
    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float
    seconds: float


def backbone_blocks(module: nn.Module) -> list[nn.Module]:
    """The feature blocks of a classifier, in order: ``features`` (VGG, SqueezeNet, EfficientNet,
    MobileNet, DenseNet, AlexNet) or the children before the global pooling (ResNet, GoogLeNet).

    Raises:
        ValueError: when no such blocks can be found.
    """
    features = getattr(module, "features", None)
    if isinstance(features, nn.Sequential):
        return list(features)
    children = list(module.children())
    while children and isinstance(children[-1], (nn.Linear, nn.Dropout, nn.Flatten, nn.AdaptiveAvgPool2d)):
        children.pop()
    if len(children) < 2:
        raise ValueError(f"{type(module).__name__} has no sequence of feature blocks to transfer from.")
    return children


def _split(blocks: list[nn.Module], mode: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """(frozen, trainable) blocks: all frozen for "head"; the last block with weights trainable for "finetune"."""
    if mode == "head":
        return blocks, []
    last = max(i for i, b in enumerate(blocks) if any(True for _ in b.parameters()))
    return blocks[:last], blocks[last:]


def transfer_tensors(base: LoadedModel, dataset: ImageDataset, size: int | None = 112, val_fraction: float = 0.3,
                     seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The dataset as the base model's input at ``size`` px (None: its own size), split seeded and
    stratified: (x_train, y_train, x_val, y_val)."""
    pre = base.preprocessing if size is None else replace(base.preprocessing, resize=size, crop=size)
    x = torch.cat([pre(image) for image in dataset.images])
    y = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))
    train_idx, val_idx = stratified_split(dataset.labels, val_fraction, seed)
    if len(val_idx) == 0:
        raise ValueError("Every class needs at least two images so that one can be held out for validation.")
    t, v = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return x[t], y[t], x[v], y[v]


@torch.inference_mode()
def frozen_outputs(blocks: list[nn.Module], x: Tensor, batch_size: int = 32,
                   progress: Callable[[float, str], None] | None = None) -> Tensor:
    """Run the frozen blocks (of a shared model, in eval mode) over ``x`` once, in batches."""
    chain = nn.Sequential(*blocks)  # a new container around the same modules: nothing is changed
    parts = []
    for start in range(0, len(x), batch_size):
        parts.append(chain(x[start:start + batch_size]).clone())
        if progress:
            progress(min(1.0, (start + batch_size) / len(x)), "running the frozen layers once")
    return torch.cat(parts)


class Head(nn.Module):
    """The new top: the trainable blocks (if any), global average pooling and a linear layer."""

    def __init__(self, trainable: list[nn.Module], channels: int, num_classes: int):
        super().__init__()
        self.blocks = nn.Sequential(*trainable)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(x)
        return self.linear(x.mean(dim=(2, 3)) if x.dim() == 4 else x)


def transfer_learning(base: LoadedModel, dataset: ImageDataset, mode: str = "head", epochs: int = 30,
                      lr: float = 1e-3, batch_size: int = 32, size: int | None = 112, val_fraction: float = 0.3,
                      seed: int = 0, method: str | None = None, stop=None,
                      progress: Callable[[float, str], None] | None = None) -> Iterator[TransferRecord]:
    """Train a new head on ``base``'s frozen features ("head"), or the head and the last feature
    block ("finetune"), on ``dataset``; yield one record per epoch.

    Args:
        base: the network to transfer from (trained: ImageNet weights; random weights: the baseline).
        size: input side in pixels (smaller is faster; None: the network's own size).
        method: the name the records carry (default: the mode and the base's weights).
        stop: an Event or callable, checked every epoch.
    """
    if mode not in TRANSFER_MODES:
        raise ValueError(f"Unknown transfer mode {mode!r}; choose one of {', '.join(TRANSFER_MODES)}.")
    began = time.perf_counter()
    method = method or f"{mode} on {base.weights}"
    x_train, y_train, x_val, y_val = transfer_tensors(base, dataset, size, val_fraction, seed)
    frozen, trainable = _split(backbone_blocks(base.module), mode)
    cached_train = frozen_outputs(frozen, x_train, progress=progress)
    cached_val = frozen_outputs(frozen, x_val)
    generator = torch.Generator().manual_seed(seed)
    trainable = [private_copy(b) for b in trainable]
    with torch.no_grad():
        probe = nn.Sequential(*trainable).eval()(cached_train[:1]) if trainable else cached_train[:1]
    head = Head(trainable, int(probe.shape[1]), len(dataset.class_names))
    nn.init.normal_(head.linear.weight, 0.0, 0.01, generator=generator)
    nn.init.zeros_(head.linear.bias)
    for p in head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    n = len(y_train)
    for epoch in range(1, epochs + 1):
        if stop is not None and (stop.is_set() if hasattr(stop, "is_set") else stop()):
            return
        head.train()
        order = torch.randperm(n, generator=generator)
        loss_sum = 0.0
        for start in range(0, n, batch_size):
            batch = order[start:start + batch_size]
            loss = F.cross_entropy(head(cached_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch)
        head.eval()
        with torch.no_grad():
            train_acc = float((head(cached_train).argmax(1) == y_train).float().mean())
            val_acc = float((head(cached_val).argmax(1) == y_val).float().mean())
        yield TransferRecord(method, epoch, loss_sum / n, train_acc, val_acc, time.perf_counter() - began)


def from_scratch(dataset: ImageDataset, config: TrainConfig, size: int = 32, channels: int = 3,
                 val_fraction: float = 0.3, seed: int = 0, method: str = "small CNN from scratch",
                 stop=None) -> Iterator[TransferRecord]:
    """The baseline: the small CNN trained from random weights on the same split (same seed and
    fraction), at ``size`` px; yields one record per epoch."""
    data = dataset_data(dataset, size=size, channels=channels, val_fraction=val_fraction, seed=seed)
    for record in train(replace(config, seed=seed), data, stop=stop):
        if record.kind == "epoch":
            yield TransferRecord(method, record.epoch, record.loss, float(record.train_accuracy),
                                 float(record.val_accuracy), record.seconds)


def best_accuracy(records: list[TransferRecord]) -> float:
    """The final validation accuracy of a run (nan when empty)."""
    return records[-1].val_accuracy if records else math.nan
