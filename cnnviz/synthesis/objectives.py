"""Objectives: scores to *maximise*, computed from a ``Capture`` of one forward pass (the image, the
logits, recorded activations). They combine with ``+``, ``-``, ``*``: ``class_logit(3) - 1e-3 * l2()``,
``-feature_error("layer3", target) - 0.5 * total_variation(2)``. Each returns one value per image of
the batch, shape (N,)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..preprocessing import Preprocessing

@dataclass
class Capture:
    """What one forward pass saw, for objectives to score.

    Attributes:
        pixels: the image being optimised, (N, C, H, W) in [0, 1], before transforms.
        logits: model output (N, K), or None when the forward stopped after the last needed layer.
        activations: layer name -> output of that layer (in the autograd graph).
        preprocessing: the model's preprocessing (for ``centered``); None means pixels are centred.
        values: filled by the objective's terms as they are computed: term name -> (N,) values.
        normalize: the preprocessing's ``normalize`` with its mean and std already made tensors (the
            loop builds it once per run); None uses ``preprocessing.normalize``.
    """

    pixels: Tensor
    logits: Tensor | None
    activations: dict[str, Tensor]
    preprocessing: Preprocessing | None = None
    values: dict[str, Tensor] = field(default_factory=dict)
    normalize: Callable[[Tensor], Tensor] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def centered(self) -> Tensor:
        """``pixels`` normalised with the model's mean and std (zero = the data's mean colour)."""
        if self.normalize is not None:
            return self.normalize(self.pixels)
        return self.pixels if self.preprocessing is None else self.preprocessing.normalize(self.pixels)


class Objective:
    """A score to maximise, computed from a ``Capture``; returns (N,) values.

    Objectives combine with ``+``, ``-``, unary ``-`` and ``*`` (by a number or another objective).
    ``layers`` are the activations it reads; ``needs_logits`` says whether it reads the model output
    (if not, the forward pass stops after the last needed layer, which also allows any input size).
    """

    def __init__(
        self,
        fn: Callable[[Capture], Tensor],
        name: str = "objective",
        layers: Sequence[str] = (),
        needs_logits: bool = False,
        scaled: "tuple[Objective, float] | None" = None,
    ):
        self.fn = fn
        self.name = name
        self.layers = tuple(dict.fromkeys(layers))
        self.needs_logits = needs_logits
        self.scaled = scaled
        """(base, weight) when this objective is weight × base: ``a ± weight × base`` is then one op."""

    def __call__(self, capture: Capture) -> Tensor:
        return self.fn(capture)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def _combine(self, other: "Objective | float", op: Callable, symbol: str) -> "Objective":
        if isinstance(other, numbers.Number):
            value = float(other)
            return Objective(lambda c: op(self(c), value), f"{self.name} {symbol} {value:g}", self.layers, self.needs_logits)
        if not isinstance(other, Objective):
            return NotImplemented
        fn = lambda c: op(self(c), other(c))  # noqa: E731
        if other.scaled is not None and symbol in "+-":  # a ± w·b as one torch.add (one op less, forward and backward)
            base, weight = other.scaled
            alpha = weight if symbol == "+" else -weight
            fn = lambda c: torch.add(self(c), base(c), alpha=alpha)  # noqa: E731
        return Objective(
            fn,
            f"{self.name} {symbol} {other.name}",
            (*self.layers, *other.layers),
            self.needs_logits or other.needs_logits,
        )

    def __add__(self, other):
        return self._combine(other, lambda a, b: a + b, "+")

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-")

    def __rsub__(self, other):
        return (-self) + other

    def __neg__(self):
        return Objective(lambda c: -self(c), f"-({self.name})", self.layers, self.needs_logits)

    def __mul__(self, other):
        if isinstance(other, numbers.Number):
            value = float(other)
            return Objective(lambda c: self(c) * value, f"{self.name} * {value:g}", self.layers, self.needs_logits, (self, value))
        return self._combine(other, lambda a, b: a * b, "*")

    def __rmul__(self, other):
        if isinstance(other, numbers.Number):
            value = float(other)
            return Objective(lambda c: value * self(c), f"{value:g} * {self.name}", self.layers, self.needs_logits, (self, value))
        return NotImplemented


def term(name: str, layers: Sequence[str] = (), needs_logits: bool = False):
    """Decorator: make ``fn(capture) -> (N,)`` a named objective whose values are reported as ``name``."""

    def wrap(fn: Callable[[Capture], Tensor]) -> Objective:
        def recorded(capture: Capture) -> Tensor:
            value = fn(capture)
            capture.values[name] = value
            return value

        return Objective(recorded, name, layers, needs_logits)

    return wrap


def _sum_per_image(t: Tensor) -> Tensor:
    """(N, ...) -> (N,): the sum over all but the first dimension (one op, no flatten)."""
    return t.sum(dim=tuple(range(1, t.dim())))


def _activation(capture: Capture, layer: str) -> Tensor:
    if layer not in capture.activations:
        raise ValueError(f"Layer {layer!r} did not run in the forward pass, so it cannot be optimised.")
    return capture.activations[layer]


def class_logit(index: int | Tensor) -> Objective:
    """S_c: the pre-softmax score of class ``index`` (an int, or one class per image (N,))."""

    @term(f"logit {index}" if isinstance(index, int) else "logit", needs_logits=True)
    def fn(c: Capture) -> Tensor:
        k = c.logits.shape[1]
        if isinstance(index, int):
            if not 0 <= index < k:
                raise ValueError(f"Class index {index} is out of range: the model has {k} classes (0 to {k - 1}).")
            return c.logits[:, index]
        return c.logits.gather(1, index.view(-1, 1).to(c.logits.device)).squeeze(1)

    return fn


def cross_entropy(labels: Tensor) -> Objective:
    """Cross-entropy of the softmax against ``labels`` (N,): maximise it to move away from them."""

    @term("cross-entropy", needs_logits=True)
    def fn(c: Capture) -> Tensor:
        return F.cross_entropy(c.logits.float(), labels.to(c.logits.device), reduction="none")

    return fn


def channel(layer: str, index: int) -> Objective:
    """Mean activation of channel ``index`` of ``layer`` over all positions (or unit ``index`` of a
    flat layer)."""

    @term(f"{layer} channel {index}", layers=[layer])
    def fn(c: Capture) -> Tensor:
        a = _activation(c, layer)
        if not 0 <= index < a.shape[1]:
            raise ValueError(f"Layer {layer!r} has {a.shape[1]} channels (0 to {a.shape[1] - 1}); {index} is out of range.")
        a = a[:, index]
        return a.flatten(1).mean(1) if a.dim() > 1 else a

    return fn


def unit(layer: str, index: int, row: int | None = None, col: int | None = None) -> Objective:
    """Activation of one unit: channel ``index`` at position (row, col) (default: the centre)."""

    @term(f"{layer} unit {index}", layers=[layer])
    def fn(c: Capture) -> Tensor:
        a = _activation(c, layer)
        if not 0 <= index < a.shape[1]:
            raise ValueError(f"Layer {layer!r} has {a.shape[1]} channels (0 to {a.shape[1] - 1}); {index} is out of range.")
        if a.dim() != 4:
            return a[:, index]
        h, w = a.shape[2:]
        i = h // 2 if row is None else row
        j = w // 2 if col is None else col
        if not (0 <= i < h and 0 <= j < w):
            raise ValueError(f"Layer {layer!r} is {h}×{w}; position ({i}, {j}) is outside it.")
        return a[:, index, i, j]

    return fn


def deepdream(layer: str) -> Objective:
    """½‖A‖²: half the sum of squared activations of ``layer`` (Mordvintsev et al. 2015)."""

    @term(f"{layer} ½‖A‖²", layers=[layer])
    def fn(c: Capture) -> Tensor:
        return 0.5 * _sum_per_image(_activation(c, layer).float().pow(2))

    return fn


def feature_error(layer: str, target: Tensor, name: str = "feature error") -> Objective:
    """‖Φ(x) − Φ₀‖² / ‖Φ₀‖²: relative distance of ``layer``'s features to ``target`` (a penalty),
    reported as ``name`` (Gatys' content loss is one).

    Raises:
        ValueError: if the target features are all zero (nothing to reconstruct from).
    """
    target = target.detach()
    norm = target.float().pow(2).flatten(1).sum(1)
    if not bool((norm > 0).all()):
        raise ValueError(f"The features of layer {layer!r} are all zero for this image: nothing to invert. Pick another layer.")

    @term(name, layers=[layer])
    def fn(c: Capture) -> Tensor:
        a = _activation(c, layer)
        if a.shape != target.shape:
            raise ValueError(f"Layer {layer!r} gives {tuple(a.shape)}, the target features are {tuple(target.shape)}.")
        return _sum_per_image((a.float() - target).pow(2)) / norm

    return fn


def inversion(layer: str, target: Tensor) -> Objective:
    """Score for feature inversion (Mahendran & Vedaldi 2015): −‖Φ(x) − Φ₀‖² / ‖Φ₀‖²."""
    return -feature_error(layer, target)


def l2() -> Objective:
    """‖I‖²: squared norm of the image as the model's normalisation centres it (a penalty: subtract it)."""

    @term("‖I‖²")
    def fn(c: Capture) -> Tensor:
        return _sum_per_image(c.centered.pow(2))

    return fn


def total_variation(beta: float = 2.0) -> Objective:
    """TV^β: mean over pixels of ((∂x I)² + (∂y I)²)^(β/2), summed over channels (a penalty: subtract it)."""
    if not 0 < beta <= 4:
        raise ValueError("The total variation exponent β must be in (0, 4]; Mahendran & Vedaldi use 1 to 2.")

    kernels: dict[tuple, Tensor] = {}

    @term(f"TV^{beta:g}")
    def fn(c: Capture) -> Tensor:
        x = c.pixels
        n, channels = x.shape[:2]
        key = (channels, x.dtype, x.device)
        if key not in kernels:  # ∂x I = I[i, j+1] − I[i, j], ∂y I = I[i+1, j] − I[i, j], per channel
            pair = torch.tensor([[[-1.0, 1.0], [0.0, 0.0]], [[-1.0, 0.0], [1.0, 0.0]]], dtype=x.dtype, device=x.device)
            kernels[key] = pair.unsqueeze(1).repeat(channels, 1, 1, 1)  # (2C, 1, 2, 2)
        # one grouped convolution instead of four slices (cheaper forward and backward)
        d = F.conv2d(x, kernels[key], groups=channels)  # (N, 2C, H-1, W-1): ∂x, ∂y of each channel
        if beta == 2:
            return _sum_per_image(d.pow(2)) / (d.shape[2] * d.shape[3])
        squared = d.pow(2).view(n, channels, 2, *d.shape[2:]).sum(2)
        return (squared + 1e-8).pow(beta / 2).sum(1).flatten(1).mean(1)

    return fn
