"""The training loop: ``train(config, data, callback)`` is a generator of per-iteration records.

One loop serves the Train page, the recipe (overfitting a small sample, the learning-rate search,
ensembles) and the benchmark. It runs on a private network, so train mode and ``.backward()`` are
fine here; every random choice draws from one ``torch.Generator`` seeded by ``config.seed``.

Records: one ``"iteration"`` record per mini-batch (loss, learning rate, batch accuracy), one
``"epoch"`` record after each epoch (train and validation accuracy and loss, dead ReLUs per layer),
and a last ``"done"`` record carrying the ``TrainResult``: the network (the best validation epoch
when ``keep_best``), one snapshot per epoch (epoch 0 = initialisation) and the epoch history.
``stop`` (an Event or a callable) is checked before every iteration, so Stop halts within one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import forward_hooks
from .augment import AugmentConfig, augmentation, one_hot
from .data import TrainData
from .network import NetConfig, build_network, relu_layers

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
REGULARIZATIONS = ("none", "l2", "l1", "elastic")


MAX_EPOCHS = 1000
"""Most epochs one training run takes (the Train page offers up to 30, Transfer up to 60; the learning-rate finder may take more)."""
MAX_BATCH_SIZE = 1024
"""Largest mini-batch one training step takes."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on.

    Attributes:
        net: the architecture (``NetConfig``).
        augment: the augmentations (``AugmentConfig``).
        optimizer: "sgd" (with ``momentum``), "adam" or "adamw".
        lr: peak learning rate.
        schedule: "constant", "step" (× ``gamma`` every ``step_size`` epochs) or "cosine" (to 0).
        warmup_epochs: linear warm-up from 0 over this many epochs (may be fractional).
        batch_size, epochs: mini-batch size and passes over the training set.
        regularization: "none", "l2", "l1" or "elastic" (``l1_ratio`` L1 + the rest L2), of strength
            ``weight_decay`` on the weights of convolutions and linear layers. L2 is the optimizer's
            weight decay (decoupled for AdamW; Loshchilov & Hutter, 2019); L1 is added to the loss.
        patience: early stopping: stop after this many epochs without a better validation accuracy
            (None: never stop early).
        keep_best: end with the weights of the best validation epoch.
        eval_train: training images evaluated (in eval mode, without augmentation) after each epoch.
        seed: seeds initialisation, shuffling, augmentation and dropout.
    """

    net: NetConfig = field(default_factory=NetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 3
    gamma: float = 0.1
    batch_size: int = 64
    epochs: int = 6
    regularization: str = "l2"
    weight_decay: float = 0.0
    l1_ratio: float = 0.5
    patience: int | None = None
    keep_best: bool = True
    eval_train: int = 1000
    seed: int = 0

    def check(self) -> None:
        """Raise ``ValueError`` with a plain message for settings that cannot train."""
        self.net.check()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        if self.regularization not in REGULARIZATIONS:
            raise ValueError(f"Unknown regularization {self.regularization!r}; choose one of {', '.join(REGULARIZATIONS)}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError("The learning rate must be a positive number.")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("Batch size and epochs must be at least 1.")
        if self.epochs > MAX_EPOCHS or self.batch_size > MAX_BATCH_SIZE:
            raise ValueError(f"Train for at most {MAX_EPOCHS} epochs with batches of at most {MAX_BATCH_SIZE} images "
                             f"(asked: {self.epochs} epochs, batches of {self.batch_size}).")
        if self.weight_decay < 0:
            raise ValueError("The regularization strength cannot be negative.")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        raw = json.loads(text)
        return cls(**{**raw, "net": NetConfig(**raw["net"]), "augment": AugmentConfig(**raw["augment"])})


@dataclass
class Record:
    """One step of a training run.

    Attributes:
        kind: "iteration", "epoch" or "done".
        iteration: mini-batches done so far; epoch: the current epoch (1-based).
        loss: the mini-batch's loss ("iteration") or the mean training loss of the epoch ("epoch").
        lr: learning rate of this iteration.
        batch_accuracy: accuracy on this (augmented) mini-batch.
        train_accuracy, val_accuracy, val_loss: after an epoch, in eval mode, without augmentation.
        dead_relu: after an epoch: ReLU layer -> fraction of its channels never positive on the
            validation images.
        seconds: time since the start of training.
        result: on the "done" record, the ``TrainResult``.
    """

    kind: str
    iteration: int
    epoch: int
    total_iterations: int
    loss: float = float("nan")
    lr: float = float("nan")
    batch_accuracy: float = float("nan")
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    dead_relu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    result: "TrainResult | None" = None


@dataclass
class TrainResult:
    """A finished (or stopped) run.

    Attributes:
        model: the network in eval mode (the best validation epoch's weights when ``keep_best``).
        config: the ``TrainConfig``; data_name, class_names, mean, std, size, channels,
            invert_light_background, pad: what is needed to use the network on images.
        history: the "epoch" records.
        snapshots: state dicts before training (epoch 0) and after each epoch.
        best_epoch: the epoch whose weights the model holds (0: none finished).
        status: "done", "early stopped" or "stopped".
        seconds: training time.
    """

    model: nn.Module
    config: TrainConfig
    data_name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    channels: int
    invert_light_background: bool
    pad: int = 0
    history: list[Record] = field(default_factory=list)
    snapshots: list[dict[str, Tensor]] = field(default_factory=list)
    best_epoch: int = 0
    status: str = "done"
    seconds: float = 0.0

    @property
    def val_accuracy(self) -> float:
        """Validation accuracy of the weights the model holds (nan before the first epoch)."""
        for row in self.history:
            if row.epoch == self.best_epoch:
                return float(row.val_accuracy)
        return float("nan")


def learning_rate(config: TrainConfig, iteration: int, per_epoch: int) -> float:
    """The learning rate of ``iteration`` (0-based) under the schedule and warm-up."""
    total = config.epochs * per_epoch
    warm = int(round(config.warmup_epochs * per_epoch))
    if iteration < warm:
        return config.lr * (iteration + 1) / warm
    if config.schedule == "step":
        return config.lr * config.gamma ** (iteration // per_epoch // max(1, config.step_size))
    if config.schedule == "cosine":
        t = (iteration - warm) / max(1, total - warm)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return config.lr


def _decay_params(model: nn.Module) -> list[Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer, with L2 (the l2 share of elastic net) as weight decay on conv and linear weights."""
    l2 = {"l2": config.weight_decay, "elastic": config.weight_decay * (1 - config.l1_ratio)}.get(config.regularization, 0.0)
    decay = _decay_params(model)
    ids = {id(p) for p in decay}
    groups = [{"params": decay, "weight_decay": l2},
              {"params": [p for p in model.parameters() if id(p) not in ids], "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.Adam(groups, lr=config.lr)


def l1_penalty(config: TrainConfig, model: nn.Module) -> Tensor | None:
    """λ·Σ|w| (times ``l1_ratio`` for elastic net) over conv and linear weights, or None."""
    if config.regularization not in ("l1", "elastic") or config.weight_decay == 0:
        return None
    strength = config.weight_decay * (config.l1_ratio if config.regularization == "elastic" else 1.0)
    return strength * sum(w.abs().sum() for w in _decay_params(model))


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, normalize: Callable[[Tensor], Tensor],
             batch_size: int = 500, relus: list[str] | None = None) -> tuple[float, float, dict[str, float]]:
    """Accuracy, mean loss and (for ``relus``) dead-channel fractions of ``model`` on pixels ``x``.

    The model must be in eval mode. A channel is dead when it is never positive on any of the images.
    """
    relus = relus or []
    maxima: dict[str, Tensor] = {}

    def keep_max(name: str):
        def hook(module, inputs, output):
            m = output.detach().amax(dim=tuple(d for d in range(output.dim()) if d != 1))
            maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)
        return hook

    correct, loss = 0, 0.0
    with forward_hooks(model, {name: keep_max(name) for name in relus}):
        for start in range(0, len(x), batch_size):
            logits = model(normalize(x[start:start + batch_size]))
            target = y[start:start + batch_size]
            correct += int((logits.argmax(1) == target).sum())
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
    dead = {name: float((m <= 0).float().mean()) for name, m in maxima.items()}
    return correct / max(1, len(x)), loss / max(1, len(x)), dead


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _should_stop(stop) -> bool:
    if stop is None:
        return False
    return bool(stop.is_set() if hasattr(stop, "is_set") else stop())


def train(
    config: TrainConfig,
    data: TrainData,
    callback: Callable[[Record], None] | None = None,
    *,
    stop=None,
    model: nn.Module | None = None,
    lr_at: Callable[[int], float] | None = None,
    max_iterations: int | None = None,
) -> Iterator[Record]:
    """Train a network on ``data``; yield one record per iteration, per epoch, and a last "done".

    Args:
        config: the run's settings (checked first).
        data: training and validation tensors.
        callback: called with every record before it is yielded (e.g. a page's live state).
        stop: a ``threading.Event`` or a callable; checked before every iteration.
        model: train this network instead of building one from ``config.net`` (it is changed).
        lr_at: learning rate per iteration (overrides the schedule; the LR finder).
        max_iterations: stop after this many iterations (the LR finder, overfitting checks).

    Yields:
        ``Record``s; the last one (kind "done") carries the ``TrainResult``.

    Raises:
        ValueError: for settings that cannot train, or when the loss becomes NaN or infinite.
    """
    config.check()
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    if model is None:
        model = build_network(config.net, data.channels, data.num_classes, data.size, generator)
    optimizer = make_optimizer(config, model)
    transform = augmentation(config.augment)
    relus = relu_layers(model)
    normalize = data.normalize
    n = len(data.y_train)
    per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * per_epoch if max_iterations is None else min(max_iterations, config.epochs * per_epoch)
    eval_idx = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 1))[: config.eval_train]
    result = TrainResult(model, config, data.name, data.class_names, data.mean, data.std, data.size, data.channels,
                         data.invert_light_background, data.pad, snapshots=[_snapshot(model)])
    best_acc, best_state, since_best = -1.0, None, 0

    def emit(record: Record) -> Record:
        if callback is not None:
            callback(record)
        return record

    iteration, status = 0, "done"
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum, seen = 0.0, 0
        for begin in range(0, n, config.batch_size):
            if iteration >= total:
                break
            if _should_stop(stop):
                status = "stopped"
                break
            lr = lr_at(iteration) if lr_at else learning_rate(config, iteration, per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = order[begin:begin + config.batch_size]
            x, target = data.x_train[batch], one_hot(data.y_train[batch], data.num_classes)
            if transform is not None:
                x, target = transform(x, target, generator)
            logits = model(normalize(x))
            loss = F.cross_entropy(logits, target)
            penalty = l1_penalty(config, model)
            total_loss = loss + penalty if penalty is not None else loss
            optimizer.zero_grad(set_to_none=True)
            total_loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ValueError(f"The loss became {value} at iteration {iteration + 1}: the learning rate "
                                 f"({lr:.3g}) is too high. Lower it and train again.")
            iteration += 1
            loss_sum, seen = loss_sum + value * len(batch), seen + len(batch)
            accuracy = float((logits.argmax(1) == target.argmax(1)).float().mean())
            yield emit(Record("iteration", iteration, epoch, total, value, lr, accuracy,
                              seconds=time.perf_counter() - start))
        if seen == 0:
            break
        model.eval()
        train_acc = None  # after Stop only the validation set is evaluated, to end sooner
        if status != "stopped":
            train_acc, _, _ = evaluate(model, data.x_train[eval_idx], data.y_train[eval_idx], normalize)
        val_acc, val_loss, dead = evaluate(model, data.x_val, data.y_val, normalize, relus=relus)
        row = Record("epoch", iteration, epoch, total, loss_sum / seen, lr, train_accuracy=train_acc,
                     val_accuracy=val_acc, val_loss=val_loss, dead_relu=dead, seconds=time.perf_counter() - start)
        result.history.append(row)
        result.snapshots.append(_snapshot(model))
        if val_acc > best_acc:
            best_acc, best_state, since_best, result.best_epoch = val_acc, result.snapshots[-1], 0, epoch
        else:
            since_best += 1
        if not config.keep_best:
            result.best_epoch = epoch
        yield emit(row)
        if status == "stopped" or iteration >= total:
            break
        if config.patience is not None and since_best >= config.patience:
            status = "early stopped"
            break
    if config.keep_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    for p in model.parameters():
        p.grad = None
    result.status, result.seconds = status, time.perf_counter() - start
    yield emit(Record("done", iteration, len(result.history), total, seconds=result.seconds, result=result))


def run(config: TrainConfig, data: TrainData, callback: Callable[[Record], None] | None = None, **kwargs) -> TrainResult:
    """Train to the end and return the ``TrainResult`` (``train`` without iterating by hand)."""
    for record in train(config, data, callback, **kwargs):
        if record.result is not None:
            return record.result
    raise RuntimeError("training ended without a result")  # unreachable


def with_overrides(config: TrainConfig, **changes) -> TrainConfig:
    """``config`` with fields replaced; ``net__width=32`` or ``augment__mixup=0.2`` reach nested ones."""
    nested: dict[str, dict] = {"net": {}, "augment": {}}
    flat = {}
    for key, value in changes.items():
        part, _, name = key.partition("__")
        if name:
            nested[part][name] = value
        else:
            flat[key] = value
    return replace(config, net=replace(config.net, **nested["net"]), augment=replace(config.augment, **nested["augment"]), **flat)
