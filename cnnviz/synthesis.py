"""Generate images by optimising the input: class and neuron visualization, feature inversion,
DeepDream (and, in ``cnnviz.adversarial``, adversarial examples), all on ONE loop.

The loop is built from small composable parts, in the spirit of Lucent:

* **objectives** (``Objective``): scores to *maximise*, computed from a ``Capture`` of one forward
  pass (the image, the logits, recorded activations). They combine with ``+``, ``-``, ``*``:
  ``class_logit(3) - 1e-3 * l2()``, ``-feature_error("layer3", target) - 0.5 * total_variation(2)``.
  Each returns one value per image of the batch, shape (N,).
* **transforms** (``jitter``, ``random_scale``, ``compose``): random, differentiable changes of the image
  before each forward pass, drawn from a ``torch.Generator`` so a seed fixes the result.
* **step rules** (``ascent``, ``normalized_ascent``, ``sign_ascent``, ``adam``): how a gradient becomes
  an update.
* **regularizers** (``blur_every``, ``clip_small_norm``, ``clip_small_contribution``, ``project_linf``):
  act on the image between steps.

``optimize`` is the loop: a generator yielding ``Step``s, so a page can show the image as it forms.
The image lives in [0, 1] pixel space and is normalised with the model's ``Preprocessing`` before each
forward; pixels are clamped to [0, 1] after every step. Gradients are taken with respect to the image
only (``torch.autograd.grad``), hooks live only inside one forward pass (``cnnviz.hooks.forward_until``
when the objective reads no logits, so the pass stops after the last needed layer;
``record_activations`` otherwise), so nothing is left on the shared model, also when the loop is
abandoned or raises.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hooks import forward_until, get_module, record_activations
from .models import LoadedModel
from .preprocessing import Preprocessing

MAX_STEPS = 500
"""Most optimisation steps one call may run (per octave for DeepDream), so one session cannot hold
the server for minutes."""
MAX_DREAM_SIZE = 512
"""Largest side, in pixels, of a DeepDream image."""
MAX_OCTAVES = 6
MAX_SIZE = 512
"""Largest side of any generated image (class viz and inversion default to the model's input size)."""


class OptimizationError(ValueError):
    """The optimisation produced NaN or Inf; the message says at which step and what to change."""


# --- capture and objectives ----------------------------------------------------------------


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


def feature_error(layer: str, target: Tensor) -> Objective:
    """‖Φ(x) − Φ₀‖² / ‖Φ₀‖²: relative distance of ``layer``'s features to ``target`` (a penalty).

    Raises:
        ValueError: if the target features are all zero (nothing to reconstruct from).
    """
    target = target.detach()
    norm = target.float().pow(2).flatten(1).sum(1)
    if not bool((norm > 0).all()):
        raise ValueError(f"The features of layer {layer!r} are all zero for this image: nothing to invert. Pick another layer.")

    @term("feature error", layers=[layer])
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


# --- transforms ------------------------------------------------------------------------------

Transform = Callable[[Tensor, torch.Generator], Tensor]


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator, device=generator.device))


def jitter(pixels: int) -> Transform:
    """Shift the image by up to ``pixels`` in x and y, wrapping around (Yosinski et al. 2015)."""
    if pixels < 0:
        raise ValueError("Jitter must be a number of pixels >= 0.")

    def fn(x: Tensor, generator: torch.Generator) -> Tensor:
        if pixels == 0:
            return x
        # one draw of both shifts: the same numbers as two draws of one
        dy, dx = torch.randint(-pixels, pixels + 1, (2,), generator=generator, device=generator.device).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))

    return fn


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom by a random factor of ``scales``, keeping the size (crop, or reflect-pad)."""

    def fn(x: Tensor, generator: torch.Generator) -> Tensor:
        s = float(scales[_randint(generator, 0, len(scales) - 1)])
        h, w = x.shape[2:]
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if (nh, nw) == (h, w):
            return x
        y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        if nh >= h:
            top, left = (nh - h) // 2, (nw - w) // 2
            return y[:, :, top : top + h, left : left + w]
        pt, pl = (h - nh) // 2, (w - nw) // 2
        return F.pad(y, (pl, w - nw - pl, pt, h - nh - pt), mode="replicate")

    return fn


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""

    def fn(x: Tensor, generator: torch.Generator) -> Tensor:
        for t in transforms:
            x = t(x, generator)
        return x

    return fn


# --- step rules -----------------------------------------------------------------------------

StepRule = Callable[[Tensor, int], Tensor]
"""``rule(gradient, step) -> update`` to add to the pixels (gradient of the score to maximise)."""


def _check_lr(lr: float) -> float:
    if not (isinstance(lr, numbers.Number) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"The step size must be a positive number, not {lr!r}.")
    return float(lr)


def ascent(lr: float) -> StepRule:
    """Plain gradient ascent: lr × g."""
    lr = _check_lr(lr)
    return lambda g, step: lr * g


def normalized_ascent(lr: float) -> StepRule:
    """lr × g / mean|g| per image (DeepDream's step): the step size is in pixel units, whatever the
    gradient's scale."""
    lr = _check_lr(lr)

    def rule(g: Tensor, step: int) -> Tensor:
        dims = tuple(range(1, g.dim()))
        count = g[0].numel()
        # mean |g| = ‖g‖₁ / count, clamped at 1e-12; the L1 norm is one op (abs + mean are two)
        l1 = torch.linalg.vector_norm(g, 1, dim=dims, keepdim=True).clamp_min_(1e-12 * count)
        return g * ((lr * count) / l1)

    return rule


def sign_ascent(lr: float) -> StepRule:
    """lr × sign(g): the L∞ steepest-ascent step of FGSM and PGD."""
    lr = _check_lr(lr)
    return lambda g, step: lr * g.sign()


def adam(lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> StepRule:
    """Adam (ascent direction), with its own state; one rule object per run."""
    lr = _check_lr(lr)
    state: dict[str, Tensor] = {}
    t = 0  # steps taken by this rule

    def rule(g: Tensor, step: int) -> Tensor:
        nonlocal t
        if "m" not in state:
            state["m"], state["v"] = torch.zeros_like(g), torch.zeros_like(g)
        t += 1
        m = state["m"].mul_(betas[0]).add_(g, alpha=1 - betas[0])
        v = state["v"].mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
        # lr · m̂ / (√v̂ + eps) with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)
        denominator = (v / (1 - betas[1] ** t)).sqrt_().add_(eps)
        return (m / denominator).mul_(lr / (1 - betas[0] ** t))

    return rule


# --- regularizers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageState:
    """What a regularizer sees after a step: pixels (N, C, H, W) in [0, 1], the gradient of the score
    with respect to them, the 1-based step number, and the model's preprocessing."""

    pixels: Tensor
    grad: Tensor
    step: int
    preprocessing: Preprocessing


Regularizer = Callable[[ImageState], Tensor]
"""``regularizer(state) -> new pixels``."""


@functools.lru_cache(maxsize=64)
def _gaussian_kernels(sigma: float, radius: int, channels: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row and column kernels (C, 1, 1, 2r+1) and (C, 1, 2r+1, 1) of a separable Gaussian (cached:
    the loop blurs with the same kernel every few steps; conv2d only reads them)."""
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    return kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding (radius ⌈3σ⌉)."""
    if sigma <= 0:
        return x
    radius = max(1, min(math.ceil(3 * sigma), min(x.shape[2:]) - 1))
    c = x.shape[1]
    rows, cols = _gaussian_kernels(float(sigma), radius, c, x.dtype, x.device)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(F.conv2d(x, rows, groups=c), cols, groups=c)


def blur_every(every: int, sigma: float) -> Regularizer:
    """Gaussian blur with ``sigma`` pixels every ``every`` steps (Yosinski et al. 2015)."""
    if every < 1 or sigma < 0:
        raise ValueError("Blur needs a period of at least 1 step and a sigma >= 0.")
    return lambda s: gaussian_blur(s.pixels, sigma) if s.step % every == 0 else s.pixels


def _mean_colour(pre: Preprocessing, like: Tensor) -> Tensor:
    return torch.tensor(pre.mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1).expand_as(like)


def _below_percentile(score: Tensor, percentile: float) -> Tensor:
    """(N, H, W) score -> boolean mask of positions below the per-image percentile."""
    flat = score.flatten(1)
    threshold = torch.quantile(flat, percentile / 100.0, dim=1, keepdim=True)
    return (flat < threshold).view_as(score)


def clip_small_norm(percentile: float) -> Regularizer:
    """Set pixels whose norm over channels (of the centred image) is below the ``percentile``-th
    percentile to zero, i.e. to the data's mean colour (Yosinski et al. 2015)."""
    if not 0 <= percentile < 100:
        raise ValueError("The norm-clipping percentile must be in [0, 100).")

    def fn(s: ImageState) -> Tensor:
        if percentile == 0:
            return s.pixels
        norm = s.preprocessing.normalize(s.pixels).pow(2).sum(1)
        mask = _below_percentile(norm, percentile).unsqueeze(1)
        return torch.where(mask, _mean_colour(s.preprocessing, s.pixels), s.pixels)

    return fn


def clip_small_contribution(percentile: float) -> Regularizer:
    """Set pixels whose contribution |Σ_c x·∂S/∂x| (centred image times gradient) is below the
    ``percentile``-th percentile to the mean colour (Yosinski et al. 2015)."""
    if not 0 <= percentile < 100:
        raise ValueError("The contribution-clipping percentile must be in [0, 100).")

    def fn(s: ImageState) -> Tensor:
        if percentile == 0:
            return s.pixels
        contribution = (s.preprocessing.normalize(s.pixels) * s.grad).sum(1).abs()
        mask = _below_percentile(contribution, percentile).unsqueeze(1)
        return torch.where(mask, _mean_colour(s.preprocessing, s.pixels), s.pixels)

    return fn


def project_linf(center: Tensor, epsilon: float) -> Regularizer:
    """Project onto the L∞ ball of radius ``epsilon`` (pixel units) around ``center`` (PGD)."""
    center = center.detach()
    low, high = center - epsilon, center + epsilon
    return lambda s: torch.clamp(s.pixels, low, high)


# --- the loop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One report of the loop.

    Attributes:
        step: number of steps done (1-based).
        total: number of steps this run will do.
        pixels: the image after this step, (N, C, H, W) in [0, 1], a detached copy.
        losses: this step's values: "objective" (the total score) and each named term, averaged over
            the batch.
        history: the ``losses`` of every step so far, oldest first.
    """

    step: int
    total: int
    pixels: Tensor
    losses: dict[str, float]
    history: tuple[dict[str, float], ...]


def _forward(model: nn.Module, x: Tensor, layers: Sequence[str], needs_logits: bool) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Run the model, recording ``layers`` in the graph; stop early when the logits are not needed."""
    if not layers:
        return model(x), {}
    if needs_logits:
        with record_activations(model, layers, keep_graph=True) as acts:
            logits = model(x)
        return logits, dict(acts)
    return None, forward_until(model, x, layers, keep_graph=True)


def check_steps(steps: int, limit: int = MAX_STEPS) -> int:
    """Validate a step count (1 to ``limit``)."""
    if not isinstance(steps, numbers.Integral) or not 1 <= steps <= limit:
        raise ValueError(f"The number of steps must be a whole number from 1 to {limit}, not {steps!r}.")
    return int(steps)


def optimize(
    model: nn.Module,
    objective: Objective,
    init: Tensor,
    steps: int,
    step_rule: StepRule,
    preprocessing: Preprocessing,
    transforms: Sequence[Transform] = (),
    regularizers: Sequence[Regularizer] = (),
    seed: int = 0,
    every: int = 1,
    max_steps: int = MAX_STEPS,
) -> Iterator[Step]:
    """The one optimisation loop: gradient steps on the image to maximise ``objective``.

    Each step: transform the pixels (random, seeded), normalise, forward, score, gradient with
    respect to the pixels only (``torch.autograd.grad``; the model's parameters get no ``.grad``),
    check it is finite, update with ``step_rule``, apply the ``regularizers`` in order, clamp to [0, 1].

    Args:
        model: the (shared) module, in eval mode; it is not modified.
        objective: the score to maximise, (N,) per image.
        init: starting pixels (N, C, H, W) in [0, 1].
        steps: number of steps, 1 to ``max_steps``.
        step_rule: e.g. ``adam(0.05)``, ``normalized_ascent(0.01)``, ``sign_ascent(2/255)``.
        preprocessing: the model's ``Preprocessing`` (its normalisation).
        transforms: applied to the pixels before each forward, e.g. ``[jitter(4)]``.
        regularizers: applied to the pixels after each step.
        seed: seeds the ``torch.Generator`` that every random choice draws from.
        every: yield every ``every`` steps (and always after the last one).
        max_steps: upper bound on ``steps``.

    Yields:
        ``Step`` after every ``every`` steps and after the last one.

    Raises:
        OptimizationError: the score or its gradient became NaN or Inf.
        ValueError: bad parameters.
    """
    steps = check_steps(steps, max_steps)
    if every < 1:
        raise ValueError("`every` must be at least 1.")
    if init.dim() != 4 or init.shape[1] != preprocessing.channels:
        raise ValueError(f"The start image must be (N, {preprocessing.channels}, H, W), not {tuple(init.shape)}.")
    for name in objective.layers:
        get_module(model, name)  # KeyError with the valid names
    generator = torch.Generator(device=init.device).manual_seed(int(seed))
    transform = compose(list(transforms))
    pixels = init.detach().float().clamp(0, 1).clone()
    normalize = preprocessing.normalize  # (p - mean) / std as one op, constants built once per pipeline

    layers, needs_logits, batch = objective.layers, objective.needs_logits, len(pixels)
    history: list[dict[str, float]] = []
    for k in range(1, steps + 1):
        param = pixels.detach().requires_grad_(True)
        with torch.enable_grad():
            x = normalize(transform(param, generator))
            logits, acts = _forward(model, x, layers, needs_logits)
            capture = Capture(param, logits, acts, preprocessing, normalize=normalize)
            score = objective(capture)
            total = score.sum()
            (grad,) = torch.autograd.grad(total, [param])
        # one read-back per step: the total score, the gradient's sum and each term's values. A NaN
        # or Inf entry always makes the sum non-finite; a non-finite sum of finite entries (overflow)
        # is told apart by the exact check, which only runs then.
        terms = capture.values
        with torch.no_grad():
            parts = [total.view(1), grad.sum().view(1), *(v.reshape(-1) for v in terms.values())]
            summary = torch.cat(parts).tolist()
        if not math.isfinite(summary[0]):
            raise OptimizationError(
                f"The optimisation diverged at step {k}: the objective became {summary[0]}. "
                "Lower the step size or the regularisation weights and try again."
            )
        if not math.isfinite(summary[1]) and not bool(torch.isfinite(grad).all()):
            raise OptimizationError(
                f"The optimisation diverged at step {k}: the gradient contains NaN or Inf. "
                "Lower the step size or the regularisation weights and try again."
            )
        with torch.no_grad():
            pixels = pixels + step_rule(grad, k)
            for regularize in regularizers:
                pixels = regularize(ImageState(pixels, grad, k, preprocessing))
            pixels = pixels.clamp(0, 1)
        losses = {"objective": summary[0] / batch}
        start = 2
        for name, v in terms.items():  # batch means of the terms
            losses[name] = math.fsum(summary[start : start + v.numel()]) / v.numel()
            start += v.numel()
        history.append(losses)
        if k % every == 0 or k == steps:
            yield Step(k, steps, pixels.detach().clone(), losses, tuple(history))


def run(steps: Iterator[Step]) -> Step:
    """Run a generator of ``Step``s to the end and return the last one."""
    last = None
    for last in steps:
        pass
    return last


# --- methods --------------------------------------------------------------------------------


def class_index(model: LoadedModel, name: str | int) -> int:
    """Index of a class given by index or name (case-insensitive).

    Raises:
        ValueError: unknown name (with close matches) or index out of range.
    """
    k = len(model.class_names)
    if isinstance(name, numbers.Integral):
        if not 0 <= int(name) < k:
            raise ValueError(f"Class index {name} is out of range: {model.name} has {k} classes (0 to {k - 1}).")
        return int(name)
    lowered = [c.lower() for c in model.class_names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    close = difflib.get_close_matches(name.lower(), lowered, n=3)
    hint = f" Did you mean {', '.join(repr(model.class_names[lowered.index(c)]) for c in close)}?" if close else ""
    raise ValueError(f"{model.name} has no class called {name!r}.{hint}")


INITS = ("zeros", "noise", "image")


def initial_pixels(
    model: LoadedModel, init: str, size: int | None = None, image: Tensor | None = None, seed: int = 0
) -> Tensor:
    """Start image (1, C, S, S) in [0, 1].

    Args:
        init: "zeros" (zero after normalisation: the data's mean colour, as in Simonyan et al., plus
            noise of std 0.001 so ReLUs are not all exactly at their kink),
            "noise" (mean colour plus Gaussian noise of std 0.1) or "image" (``image``, normalised model
            input (1, C, H, W), resized to ``size``).
        size: side in pixels (default: the model's input size).
    """
    c, h, w = model.input_size
    size = size or h
    if not 8 <= size <= MAX_SIZE:
        raise ValueError(f"The image size must be from 8 to {MAX_SIZE} pixels, not {size}.")
    mean = torch.tensor(model.preprocessing.mean).view(1, -1, 1, 1).expand(1, c, size, size)
    generator = torch.Generator().manual_seed(int(seed))
    if init == "zeros":
        # a whisper of noise breaks ReLU ties: an exactly zero input to bias-free conv + BN + ReLU
        # (random-weight ResNets) has a zero gradient everywhere, and the ascent would never start
        return (mean + 1e-3 * torch.randn(1, c, size, size, generator=generator)).clamp(0, 1)
    if init == "noise":
        return (mean + 0.1 * torch.randn(1, c, size, size, generator=generator)).clamp(0, 1)
    if init == "image":
        if image is None:
            raise ValueError("Starting from the image needs an image.")
        pixels = model.preprocessing.denormalize(image.detach().float()).clamp(0, 1)
        if pixels.shape[2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        return pixels
    raise ValueError(f"Start from one of {', '.join(INITS)}, not {init!r}.")


def _regularizers(
    blur_every_steps: int, blur_sigma: float, clip_norm_percentile: float, clip_contribution_percentile: float
) -> list[Regularizer]:
    out: list[Regularizer] = []
    if blur_every_steps and blur_sigma > 0:
        out.append(blur_every(blur_every_steps, blur_sigma))
    if clip_norm_percentile:
        out.append(clip_small_norm(clip_norm_percentile))
    if clip_contribution_percentile:
        out.append(clip_small_contribution(clip_contribution_percentile))
    return out


def visualize(
    model: LoadedModel,
    objective: Objective,
    steps: int = 100,
    lr: float = 0.05,
    l2_weight: float = 0.0,
    blur_every_steps: int = 0,
    blur_sigma: float = 0.5,
    clip_norm_percentile: float = 0.0,
    clip_contribution_percentile: float = 0.0,
    jitter_pixels: int = 0,
    init: str = "zeros",
    image: Tensor | None = None,
    size: int | None = None,
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """Gradient ascent on the image for any objective, with Yosinski et al.'s regularizers as switches.

    Maximises ``objective − l2_weight·‖I‖²`` with normalised gradient steps of ``lr`` pixel units
    (mean |update| per pixel); blur every ``blur_every_steps`` steps (0: off), clip small-norm and
    small-contribution pixels (percentile 0: off), jitter (0: off).

    Yields:
        ``Step``s, as ``optimize``.
    """
    if l2_weight < 0:
        raise ValueError("The L2 weight λ must be >= 0.")
    if l2_weight > 0:
        objective = objective - l2_weight * l2()
    start = initial_pixels(model, init, size, image, seed)
    return optimize(
        model.module,
        objective,
        start,
        steps,
        normalized_ascent(lr),
        model.preprocessing,
        transforms=[jitter(jitter_pixels)] if jitter_pixels else [],
        regularizers=_regularizers(blur_every_steps, blur_sigma, clip_norm_percentile, clip_contribution_percentile),
        seed=seed,
        every=every,
    )


def class_visualization(model: LoadedModel, target: str | int, **params) -> Iterator[Step]:
    """Simonyan et al. 2014: argmax_I S_c(I) − λ‖I‖², with optional regularizers (see ``visualize``)."""
    return visualize(model, class_logit(class_index(model, target)), **params)


def neuron_visualization(
    model: LoadedModel, layer: str, index: int, position: tuple[int, int] | str | None = None, **params
) -> Iterator[Step]:
    """Maximise one channel of ``layer`` (mean over positions, ``position`` None), or one unit at
    ``position`` = (row, col) or "centre"."""
    get_module(model.module, layer)
    if position is None:
        objective = channel(layer, index)
    elif position == "centre":
        objective = unit(layer, index)
    else:
        objective = unit(layer, index, *position)
    return visualize(model, objective, **params)


def target_features(model: LoadedModel, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Features Φ₀ of ``layers`` for the normalised input ``x`` (no graph)."""
    for name in layers:
        get_module(model.module, name)
    try:
        with torch.inference_mode():
            acts = forward_until(model.module, x, layers)  # the layers after the last one never run
    except ValueError as error:
        raise ValueError(f"{error} It cannot be inverted; pick another layer.") from error
    return {name: acts[name].clone() for name in layers}


def invert_features(
    model: LoadedModel,
    x: Tensor,
    layer: str,
    steps: int = 200,
    lr: float = 0.05,
    tv_weight: float = 0.5,
    tv_beta: float = 2.0,
    init: str = "noise",
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """Feature inversion (Mahendran & Vedaldi 2015): from noise, minimise
    ‖Φ(x) − Φ₀‖²/‖Φ₀‖² + λ·TV^β(x), where Φ₀ = features of ``layer`` for the image ``x``.

    Uses Adam with step ``lr`` in pixel units; the losses report "feature error" and "TV^β".

    Args:
        x: normalised model input (1, C, H, W).
    """
    if tv_weight < 0:
        raise ValueError("The total variation weight λ must be >= 0.")
    target = target_features(model, x, [layer])[layer].float()
    objective = inversion(layer, target)
    tv = total_variation(tv_beta)
    if tv_weight > 0:
        objective = objective - tv_weight * tv
    start = initial_pixels(model, init, x.shape[-1], x, seed)
    return optimize(model.module, objective, start, steps, adam(lr), model.preprocessing, seed=seed, every=every)


def invert_layers(model: LoadedModel, x: Tensor, layers: Sequence[str], **params) -> Iterator[tuple[str, Step]]:
    """Invert several layers one after the other (a row of reconstructions from several depths).

    Yields:
        (layer, ``Step``) for each step report of each layer's inversion.
    """
    if not layers:
        raise ValueError("Pick at least one layer to invert.")
    for layer in layers:
        for step in invert_features(model, x, layer, **params):
            yield layer, step


def dream(
    model: LoadedModel,
    image: Tensor,
    layer: str,
    steps: int = 20,
    lr: float = 0.01,
    octaves: int = 3,
    octave_scale: float = 1.4,
    jitter_pixels: int = 4,
    size: int | None = None,
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """DeepDream (Mordvintsev et al. 2015): maximise ½‖A‖² of ``layer`` with normalised gradient steps
    and jitter, over ``octaves`` scales from small to full size; the detail dreamt at one scale is
    upsampled and added to the image at the next.

    Args:
        image: pixels (1, C, H, W) in [0, 1] (resized so the longer side is ``size``, if given).
        steps: steps per octave.
        size: longer side of the result, at most ``MAX_DREAM_SIZE``.

    Yields:
        ``Step``s whose ``step`` and ``total`` count over all octaves; ``pixels`` are at the current
        octave's scale.
    """
    steps = check_steps(steps)
    if not 1 <= octaves <= MAX_OCTAVES:
        raise ValueError(f"The number of octaves must be from 1 to {MAX_OCTAVES}.")
    if not 1.0 < octave_scale <= 2.0:
        raise ValueError("The octave scale must be in (1, 2].")
    get_module(model.module, layer)
    base = image.detach().float().clamp(0, 1)
    h, w = base.shape[2:]
    if size is not None:
        if not 16 <= size <= MAX_DREAM_SIZE:
            raise ValueError(f"The DeepDream size must be from 16 to {MAX_DREAM_SIZE} pixels, not {size}.")
        factor = size / max(h, w)
        h, w = max(1, round(h * factor)), max(1, round(w * factor))
        base = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    if max(h, w) > MAX_DREAM_SIZE:
        raise ValueError(f"The DeepDream image may be at most {MAX_DREAM_SIZE} pixels on its longer side; pass size=.")
    shapes = [(max(8, round(h / octave_scale**i)), max(8, round(w / octave_scale**i))) for i in range(octaves)][::-1]
    detail = torch.zeros(1, base.shape[1], *shapes[0])
    history: list[dict[str, float]] = []
    total = steps * octaves
    for octave, shape in enumerate(shapes):
        scaled = F.interpolate(base, size=shape, mode="bilinear", align_corners=False) if shape != (h, w) else base
        detail = F.interpolate(detail, size=shape, mode="bilinear", align_corners=False)
        loop = optimize(
            model.module,
            deepdream(layer),
            (scaled + detail).clamp(0, 1),
            steps,
            normalized_ascent(lr),
            model.preprocessing,
            transforms=[jitter(jitter_pixels)] if jitter_pixels else [],
            seed=seed + octave,
            every=1,
        )
        for s in loop:
            history.append({**s.losses, "octave": octave + 1})
            k = octave * steps + s.step
            if k % every == 0 or s.step == steps:
                yield Step(k, total, s.pixels, history[-1], tuple(history))
            last = s.pixels
        detail = last - scaled


def image_pixels(model: LoadedModel, image, size: int) -> Tensor:
    """A PIL image as pixels (1, C, H, W) in [0, 1] for ``model``'s channels, longer side ``size``.

    One-channel models get the image as they see it (``preprocessing.view``: grayscale, inverted when
    its background is light), resized; three-channel models get the whole photo, not a center crop.
    """
    if not 16 <= size <= MAX_SIZE:
        raise ValueError(f"The image size must be from 16 to {MAX_SIZE} pixels, not {size}.")
    pre = model.preprocessing
    picture = pre.view(image) if pre.channels == 1 else image.convert("RGB")
    w, h = picture.size
    factor = size / max(w, h)
    picture = picture.resize((max(1, round(w * factor)), max(1, round(h * factor))), resample=3)  # bicubic
    array = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
    return (array.unsqueeze(0) if array.dim() == 2 else array.permute(2, 0, 1)).unsqueeze(0).contiguous()
