"""The lecture's recipe for training, step by step (Karpathy, "A recipe for training neural
networks", 2019; CS231n): check the initial loss, overfit a small sample, find a learning rate,
search learning rate × weight decay coarse then fine, read the curves, then ensembles and
test-time augmentation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import TrainData
from .loop import Record, TrainConfig, TrainResult, run, train
from .network import build_network


# --- 1. the initial loss --------------------------------------------------------------------------


@dataclass
class InitialLoss:
    """The loss of a freshly initialised network against the chance level log(C)."""

    loss: float
    expected: float  # log(number of classes)
    num_classes: int

    @property
    def ok(self) -> bool:
        """Within 25 % of log(C): the output layer is not already confident about anything."""
        return abs(self.loss - self.expected) <= 0.25 * self.expected

    @property
    def message(self) -> str:
        verdict = ("as expected: the untrained network spreads its bets evenly" if self.ok else
                   "far from it: the initialisation already makes confident (wrong) predictions; "
                   "check the initialisation of the last layer, the labels, and the loss")
        return (f"Initial loss {self.loss:.3f}; with {self.num_classes} classes and uniform predictions it "
                f"would be log({self.num_classes}) = {self.expected:.3f}: {verdict}.")


@torch.no_grad()
def initial_loss(config: TrainConfig, data: TrainData, images: int = 500) -> InitialLoss:
    """The mean cross-entropy of the network ``config`` builds, before any training, on the
    first ``images`` validation images."""
    model = build_network(config.net, data.channels, data.num_classes, data.size,
                          torch.Generator().manual_seed(config.seed)).eval()
    logits = model(data.normalize(data.x_val[:images]))
    loss = float(F.cross_entropy(logits, data.y_val[:images]))
    return InitialLoss(loss, math.log(data.num_classes), data.num_classes)


# --- 2. overfit a small sample --------------------------------------------------------------------


def overfit_small_sample(config: TrainConfig, data: TrainData, batches: int = 5, max_epochs: int = 60,
                         stop=None, callback: Callable[[Record], None] | None = None) -> Iterator[Record]:
    """Train on ``batches`` mini-batches only, without augmentation, regularisation or dropout,
    until training accuracy is 100 % (or ``max_epochs``): a network that cannot do this has a bug.

    Yields the records of ``train``; the "done" record's result history shows the training accuracy.
    """
    n = batches * config.batch_size
    small = TrainData(f"{n} images of {data.name}", data.x_train[:n], data.y_train[:n], data.x_train[:n],
                      data.y_train[:n], data.class_names, data.mean, data.std, data.invert_light_background, data.pad)
    plain = replace(config, epochs=max_epochs, schedule="constant", warmup_epochs=0, weight_decay=0.0,
                    regularization="none", patience=None, keep_best=False, eval_train=n,
                    net=replace(config.net, dropout=0.0, dropconnect=0.0, stochastic_depth=0.0),
                    augment=type(config.augment)())
    reached = [False]
    for record in train(plain, small, callback, stop=lambda: reached[0] or _stopped(stop)):
        yield record
        if record.kind == "epoch" and record.train_accuracy == 1.0:
            reached[0] = True


def _stopped(stop) -> bool:
    if stop is None:
        return False
    return bool(stop.is_set() if hasattr(stop, "is_set") else stop())


# --- 3. the learning-rate finder ------------------------------------------------------------------


@dataclass
class LRFinderResult:
    """Loss against learning rate over one short run with an exponentially growing rate (Smith, 2017).

    Attributes:
        lrs, losses: per iteration; ``smoothed``: the exponentially smoothed losses.
        suggestion: a tenth of the rate where the smoothed loss is lowest (Smith's rule of thumb: an
            order of magnitude below where the loss stops falling), a good starting rate.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float


@dataclass
class LRPoint:
    """One iteration of the LR range test."""

    kind = "lr point"
    lr: float
    loss: float
    smoothed: float
    iteration: int
    steps: int


def lr_range_test(config: TrainConfig, data: TrainData, start: float = 1e-5, end: float = 1.0, steps: int = 100,
                  smoothing: float = 0.9, stop=None) -> Iterator[LRPoint | LRFinderResult]:
    """Raise the learning rate from ``start`` to ``end`` geometrically over ``steps`` iterations of
    one fresh network (Smith, 2017); stop early once the smoothed loss exceeds 4× its minimum.

    Yields:
        One ``LRPoint`` per iteration, then the ``LRFinderResult``: the curve and a suggested rate,
        a tenth of the rate at the smoothed loss's minimum.

    Raises:
        ValueError: when fewer than 3 iterations ran.
    """
    factor = (end / start) ** (1 / max(1, steps - 1))
    per_epoch = math.ceil(len(data.y_train) / config.batch_size)
    cfg = replace(config, epochs=math.ceil(steps / per_epoch) + 1, patience=None, keep_best=False, eval_train=1)
    points: list[LRPoint] = []
    best, avg = float("inf"), 0.0
    blown = [False]
    try:
        for record in train(cfg, data.subset(val=1), lr_at=lambda i: start * factor**i, max_iterations=steps,
                            stop=lambda: blown[0] or _stopped(stop)):
            if record.kind != "iteration":
                continue
            avg = smoothing * avg + (1 - smoothing) * record.loss
            value = avg / (1 - smoothing ** record.iteration)
            best = min(best, value)
            points.append(LRPoint(record.lr, record.loss, value, record.iteration, steps))
            yield points[-1]
            if value > 4 * best and record.iteration > 10:
                blown[0] = True
    except ValueError:  # the loss became inf/NaN: the curve so far is the answer
        pass
    if len(points) < 3:
        raise ValueError("The learning-rate finder needs at least 3 iterations; lower the start rate.")
    smoothed = [p.smoothed for p in points]
    suggestion = points[int(np.argmin(smoothed))].lr / 10
    yield LRFinderResult([p.lr for p in points], [p.loss for p in points], smoothed, float(suggestion))


def lr_finder(config: TrainConfig, data: TrainData, start: float = 1e-5, end: float = 1.0, steps: int = 100,
              smoothing: float = 0.9, stop=None) -> LRFinderResult:
    """Run ``lr_range_test`` to the end and return its ``LRFinderResult``."""
    *_, result = lr_range_test(config, data, start, end, steps, smoothing, stop)
    return result


# --- 4. coarse-then-fine search --------------------------------------------------------------------


@dataclass
class Trial:
    """One short training of the search."""

    stage: str  # "coarse" or "fine"
    lr: float
    weight_decay: float
    val_accuracy: float
    train_accuracy: float
    loss: float
    seconds: float


def _grid_or_random(lr_range, wd_range, trials: int, mode: str, generator: torch.Generator) -> list[tuple[float, float]]:
    lo_lr, hi_lr = (math.log10(v) for v in lr_range)
    lo_wd, hi_wd = (math.log10(v) for v in wd_range)
    if mode == "grid":
        side = max(1, int(math.floor(math.sqrt(trials))))
        lr_axis = np.linspace(lo_lr, hi_lr, side)
        wd_axis = np.linspace(lo_wd, hi_wd, max(1, trials // side))
        return [(10**a, 10**b) for a in lr_axis for b in wd_axis]
    u = torch.rand(trials, 2, generator=generator, dtype=torch.float64).numpy()
    return [(10 ** (lo_lr + (hi_lr - lo_lr) * a), 10 ** (lo_wd + (hi_wd - lo_wd) * b)) for a, b in u]


def search(config: TrainConfig, data: TrainData, lr_range: tuple[float, float] = (1e-4, 1e-1),
           wd_range: tuple[float, float] = (1e-6, 1e-2), coarse: int = 8, fine: int = 6, mode: str = "random",
           train_images: int = 1000, val_images: int = 500, epochs: int = 1, seed: int = 0,
           stop=None) -> Iterator[Trial]:
    """Coarse-then-fine search over learning rate × L2 weight decay (both log-uniform).

    The coarse stage samples ``coarse`` settings over the full ranges; the fine stage samples
    ``fine`` more in a box one decade wide (in each axis) around the best coarse trial. Each trial
    is a short training (``epochs`` on ``train_images`` images, validated on ``val_images``). At
    most 20 trials in all.

    Args:
        mode: "random" (Bergstra & Bengio, 2012: better coverage of the axis that matters) or "grid".

    Yields:
        One ``Trial`` per finished training.
    """
    if coarse + fine > 20:
        raise ValueError("At most 20 trials: the search is meant to take a minute, not an hour.")
    if mode not in ("random", "grid"):
        raise ValueError("The search mode is 'random' or 'grid'.")
    small = data.subset(train_images, val_images, seed)
    generator = torch.Generator().manual_seed(seed)
    base = replace(config, epochs=epochs, patience=None, keep_best=False, eval_train=min(500, train_images),
                   regularization="l2")
    done: list[Trial] = []
    stages = [("coarse", lr_range, wd_range, coarse), ("fine", None, None, fine)]
    for stage, lrs, wds, count in stages:
        if count <= 0:
            continue
        if stage == "fine":
            if not done:
                return
            top = max(done, key=lambda t: t.val_accuracy)
            lrs = (top.lr / 10**0.5, top.lr * 10**0.5)
            wds = (top.weight_decay / 10**0.5, top.weight_decay * 10**0.5)
        for lr, wd in _grid_or_random(lrs, wds, count, mode, generator):
            if _stopped(stop):
                return
            began = time.perf_counter()
            try:
                result = run(replace(base, lr=float(lr), weight_decay=float(wd)), small, stop=stop)
                last = result.history[-1] if result.history else None
                trial = Trial(stage, float(lr), float(wd), float(last.val_accuracy) if last else 0.0,
                              float(last.train_accuracy) if last else 0.0, float(last.loss) if last else float("nan"),
                              time.perf_counter() - began)
            except ValueError:  # diverged
                trial = Trial(stage, float(lr), float(wd), 0.0, 0.0, float("inf"), time.perf_counter() - began)
            done.append(trial)
            yield trial


# --- 5. reading the curves ------------------------------------------------------------------------


def curve_hints(iterations: Sequence[Record], epochs: Sequence[Record]) -> list[str]:
    """Plain-words readings of the learning curves, as the lecture teaches them."""
    hints: list[str] = []
    losses = [r.loss for r in iterations if math.isfinite(r.loss)]
    if len(losses) >= 20:
        k = max(5, len(losses) // 10)
        first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
        if last > 0.95 * first:
            hints.append("The loss hardly falls: the learning rate is probably too low (or far too high), "
                         "or the network cannot learn this data yet.")
        elif np.mean(losses[k:2 * k]) > first:
            hints.append("The loss first rose: the learning rate may be too high at the start; try warm-up.")
        if losses[0] > 0 and min(losses[:k]) > 0.9 * losses[0] and last < 0.5 * first:
            hints.append("A flat start and then a sudden fall: a bad initialisation can do this.")
        noise = float(np.std(np.diff(losses[-k:])))
        if noise > 0.5 * last and last > 0.05:
            hints.append("The loss per iteration is very noisy: a larger batch or a lower learning rate smooths it.")
    if epochs:
        end = epochs[-1]
        gap = (end.train_accuracy or 0) - (end.val_accuracy or 0)
        if gap > 0.05:
            hints.append(f"A large gap between training ({end.train_accuracy:.1%}) and validation "
                         f"({end.val_accuracy:.1%}) accuracy means overfitting: more data or augmentation, "
                         "more regularisation (weight decay, dropout), or a smaller network.")
        elif (end.train_accuracy or 0) < 0.9 and len(epochs) >= 2:
            hints.append("Training and validation accuracy are close but low: underfitting. Train longer, "
                         "use a bigger network, or reduce regularisation.")
        else:
            hints.append("Training and validation accuracy are close: no sign of overfitting.")
        if len(epochs) >= 3:
            vals = [r.val_accuracy or 0 for r in epochs]
            if max(vals) - vals[-1] > 0.01:
                hints.append(f"Validation accuracy peaked at epoch {int(np.argmax(vals)) + 1} and then fell: "
                             "early stopping keeps that epoch's weights.")
            elif vals[-1] - vals[-2] > 0.002:
                hints.append("Validation accuracy was still rising at the end: more epochs would help.")
        dead = end.dead_relu
        if dead and max(dead.values()) > 0.3:
            layer = max(dead, key=dead.get)
            hints.append(f"{dead[layer]:.0%} of the ReLU channels of {layer} are dead (never positive): a too "
                         "high learning rate or a bad initialisation can kill them; Leaky ReLU or ELU avoid it.")
    return hints


# --- 6. ensembles ---------------------------------------------------------------------------------


@torch.no_grad()
def predict_probabilities(model: nn.Module, x: Tensor, normalize: Callable[[Tensor], Tensor],
                          batch_size: int = 500) -> Tensor:
    """Softmax probabilities (N, K) of a model in eval mode for pixels ``x`` (N, C, H, W)."""
    return torch.cat([torch.softmax(model(normalize(x[i:i + batch_size])), 1) for i in range(0, len(x), batch_size)])


@dataclass
class EnsembleReport:
    """Members' validation accuracies and the ensemble's (softmax average)."""

    member_accuracies: list[float]
    ensemble_accuracy: float

    @property
    def mean_member(self) -> float:
        return float(np.mean(self.member_accuracies))

    @property
    def gain(self) -> float:
        return self.ensemble_accuracy - self.mean_member


def ensemble_report(models: Sequence[nn.Module], data: TrainData) -> EnsembleReport:
    """Accuracy of each member and of the average of their softmax outputs on the validation set."""
    probs = [predict_probabilities(m.eval(), data.x_val, data.normalize) for m in models]
    accs = [float((p.argmax(1) == data.y_val).float().mean()) for p in probs]
    mean = torch.stack(probs).mean(0)
    return EnsembleReport(accs, float((mean.argmax(1) == data.y_val).float().mean()))


def train_ensemble(config: TrainConfig, data: TrainData, members: int = 3, stop=None,
                   callback: Callable[[int, Record], None] | None = None) -> Iterator[tuple[int, Record]]:
    """Train ``members`` (3 to 5) networks that differ only in their seed (initialisation, order,
    augmentation). Yields (member index, record); each member's "done" record holds its result."""
    if not 2 <= members <= 5:
        raise ValueError("An ensemble here has 2 to 5 members.")
    for k in range(members):
        if _stopped(stop):
            return
        for record in train(replace(config, seed=config.seed + 1000 * k), data, stop=stop):
            if callback:
                callback(k, record)
            yield k, record


# --- 7. test-time augmentation --------------------------------------------------------------------


def tta_views(x: Tensor, flips: bool = True, shift: int = 2) -> list[Tensor]:
    """The image batch and its augmented views: a left-right flip, and crops shifted by ``shift``
    pixels in the four directions (zero fill)."""
    views = [x]
    if flips:
        views.append(x.flip(3))
    if shift:
        padded = F.pad(x, [shift] * 4)
        h, w = x.shape[-2:]
        for dy, dx in ((0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)):
            views.append(padded[..., dy:dy + h, dx:dx + w])
    return views


@dataclass
class TTAReport:
    plain_accuracy: float
    tta_accuracy: float
    views: int

    @property
    def gain(self) -> float:
        return self.tta_accuracy - self.plain_accuracy


def tta_report(model: nn.Module, data: TrainData, flips: bool = True, shift: int = 2) -> TTAReport:
    """Validation accuracy with and without averaging the softmax over ``tta_views``."""
    model.eval()
    views = tta_views(data.x_val, flips, shift)
    probs = [predict_probabilities(model, v, data.normalize) for v in views]
    plain = float((probs[0].argmax(1) == data.y_val).float().mean())
    averaged = float((torch.stack(probs).mean(0).argmax(1) == data.y_val).float().mean())
    return TTAReport(plain, averaged, len(views))


def results_of(records: Sequence[Record]) -> list[TrainResult]:
    """The results of the "done" records in ``records``."""
    return [r.result for r in records if r.kind == "done" and r.result is not None]
