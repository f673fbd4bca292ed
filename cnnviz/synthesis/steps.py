"""Step rules (how a gradient becomes an update) and regularizers (what acts on the image between
steps)."""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..preprocessing import Preprocessing

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
