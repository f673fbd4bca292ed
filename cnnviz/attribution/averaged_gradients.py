"""Gradients averaged over many inputs: SmoothGrad (Smilkov et al., 2017) and integrated gradients
(Sundararajan et al., 2017) with its completeness check."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..hooks import input_gradient
from .targets import Progress, Target, _check_input, logit_objective, target_indices

MAX_SAMPLES = 500
"""Most noisy copies SmoothGrad takes (the Saliency page offers up to 100)."""
MAX_STEPS = 1000
"""Most intervals integrated gradients takes (the Saliency page offers up to 200)."""

def smoothgrad(
    model: nn.Module,
    x: Tensor,
    target: Target,
    samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Tensor:
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input.

    Args:
        samples: number of noisy copies per image.
        noise: noise standard deviation as a fraction of each image's value range (max - min),
            as in the paper (10-20% works well).
        seed: seeds the noise (a private ``torch.Generator``; the global RNG is untouched).
        batch_size: noisy copies per forward/backward pass.

    Returns:
        (N, C, H, W) mean gradient.
    """
    _check_input(x)
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"SmoothGrad takes 1 to {MAX_SAMPLES} samples, not {samples}.")
    if noise < 0:
        raise ValueError("The SmoothGrad noise level cannot be negative.")
    n = x.shape[0]
    targets = target_indices(target, n)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    span = (x.flatten(1).amax(dim=1) - x.flatten(1).amin(dim=1)).view(1, n, 1, 1, 1)
    total = torch.zeros_like(x)
    done = 0
    while done < samples:
        m = min(batch_size, samples - done)
        eps = torch.randn((m, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
        noisy = (x.unsqueeze(0) + noise * span * eps).reshape(m * n, *x.shape[1:])
        _, grad = input_gradient(model, noisy, logit_objective(targets.repeat(m)))
        total += grad.view(m, *x.shape).sum(dim=0)
        done += m
        if progress is not None:
            progress(done / samples)
    return total / samples


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Target,
    baseline: Tensor | float | None = None,
    steps: int = 50,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> Tensor:
    """Integrated gradients (Sundararajan et al., 2017), trapezoid rule on ``steps`` intervals.

    (x - baseline) times the average gradient along the straight path from the baseline to x, so
    the attributions sum (approximately, up to the quadrature error) to
    score(x) - score(baseline) (completeness; check with ``completeness_gap``).

    Args:
        baseline: a black (all-zeros) input by default; a number or a tensor broadcastable to x.
        steps: number of intervals (steps + 1 gradient evaluations).
        batch_size: path points per forward/backward pass.

    Returns:
        (N, C, H, W) attributions.
    """
    _check_input(x)
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"Integrated gradients takes 1 to {MAX_STEPS} steps, not {steps}.")
    n = x.shape[0]
    targets = target_indices(target, n)
    base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    alphas = torch.linspace(0, 1, steps + 1, dtype=x.dtype, device=x.device)
    weights = torch.ones(steps + 1, dtype=x.dtype, device=x.device)
    weights[0] = weights[-1] = 0.5
    total = torch.zeros_like(x)
    for start in range(0, steps + 1, batch_size):
        a = alphas[start : start + batch_size]
        m = a.numel()
        path = (base.unsqueeze(0) + a.view(m, 1, 1, 1, 1) * (x - base).unsqueeze(0)).reshape(m * n, *x.shape[1:])
        _, grad = input_gradient(model, path, logit_objective(targets.repeat(m)))
        total += (grad.view(m, *x.shape) * weights[start : start + m].view(m, 1, 1, 1, 1)).sum(dim=0)
        if progress is not None:
            progress(min(start + m, steps + 1) / (steps + 1))
    return (x - base) * total / steps


def completeness_gap(
    model: nn.Module, x: Tensor, target: Target, attributions: Tensor, baseline: Tensor | float | None = None
) -> tuple[Tensor, Tensor]:
    """Sum of attributions per image vs score(x) - score(baseline).

    Returns:
        (sums (N,), score differences (N,)): equal for exact integrated gradients.
    """
    base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    objective = logit_objective(target)
    with torch.inference_mode():
        difference = objective(model(x)) - objective(model(base))
    return attributions.flatten(1).sum(dim=1), difference
