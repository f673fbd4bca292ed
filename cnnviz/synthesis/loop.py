"""The one optimisation loop: ``optimize`` yields ``Step``s, so a page can show the image as it forms."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..device import module_device
from ..hooks import forward_until, get_module, record_activations
from ..preprocessing import Preprocessing
from .objectives import Capture, Objective
from .steps import ImageState, Regularizer, StepRule
from .transforms import Transform, compose

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


def evaluate(
    model: nn.Module,
    objective: Objective,
    pixels: Tensor,
    preprocessing: Preprocessing,
    step: int,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """One evaluation of the loop: the objective at ``pixels`` and its gradient with respect to them.

    Forward (stopping after the last needed layer when no logits are read), score, gradient with
    respect to the pixels only (``torch.autograd.grad``), one read-back of the values, finiteness
    checks. ``optimize`` and ``lbfgs_optimize`` both run it.

    Args:
        pixels: (N, C, H, W) in [0, 1] (not modified).
        step: the 1-based step number, for error messages.
        prepare: pixels -> model input (transforms, then normalisation); default: normalisation.

    Returns:
        (gradient (N, C, H, W) of the summed score, losses: "objective" and each named term, batch means).

    Raises:
        OptimizationError: the score or its gradient is NaN or Inf.
    """
    prepare = prepare or preprocessing.normalize
    param = pixels.detach().requires_grad_(True)
    with torch.enable_grad():
        x = prepare(param)
        if x.dim() == 4 and x.device.type == "cpu":  # oneDNN's NHWC convolutions: 10-40 % faster on a CPU
            x = x.contiguous(memory_format=torch.channels_last)
        logits, acts = _forward(model, x, objective.layers, objective.needs_logits)
        capture = Capture(param, logits, acts, preprocessing, normalize=preprocessing.normalize)
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
            f"The optimisation diverged at step {step}: the objective became {summary[0]}. "
            "Lower the step size or the regularisation weights and try again."
        )
    if not math.isfinite(summary[1]) and not bool(torch.isfinite(grad).all()):
        raise OptimizationError(
            f"The optimisation diverged at step {step}: the gradient contains NaN or Inf. "
            "Lower the step size or the regularisation weights and try again."
        )
    losses = {"objective": summary[0] / len(pixels)}
    start = 2
    for name, v in terms.items():  # batch means of the terms
        losses[name] = math.fsum(summary[start : start + v.numel()]) / v.numel()
        start += v.numel()
    return grad, losses


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
        init: starting pixels (N, C, H, W) in [0, 1]; moved to the model's device (the ``Step``s'
            pixels are there).
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
    # the random choices come from a CPU generator, so a seed gives the same jitter on every device
    generator = torch.Generator().manual_seed(int(seed))
    transform = compose(list(transforms))
    pixels = init.detach().float().to(module_device(model)).clamp(0, 1).clone()  # on the model's device
    normalize = preprocessing.normalize  # (p - mean) / std as one op, constants built once per pipeline

    def prepare(p: Tensor) -> Tensor:
        return normalize(transform(p, generator))

    history: list[dict[str, float]] = []
    for k in range(1, steps + 1):
        grad, losses = evaluate(model, objective, pixels, preprocessing, k, prepare)
        with torch.no_grad():
            pixels = pixels + step_rule(grad, k)
            for regularize in regularizers:
                pixels = regularize(ImageState(pixels, grad, k, preprocessing))
            pixels = pixels.clamp(0, 1)
        history.append(losses)
        if k % every == 0 or k == steps:
            yield Step(k, steps, pixels.detach().clone(), losses, tuple(history))


def run(steps: Iterator[Step]) -> Step:
    """Run a generator of ``Step``s to the end and return the last one."""
    last = None
    for last in steps:
        pass
    return last
