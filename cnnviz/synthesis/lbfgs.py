"""L-BFGS beside the loop: ``torch.optim.LBFGS`` on the image, yielding the same ``Step``s.

L-BFGS needs a closure and evaluates the objective several times per step (its line search), so it
cannot be one more step rule of ``optimize``. It shares the loop's evaluation (``evaluate``: forward
to the last needed layer, score, gradient with respect to the pixels only, NaN checks), so nothing
touches the model's parameters. No transforms or regularizers: the objective must be deterministic
for the line search.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn

from ..device import module_device
from ..hooks import get_module
from ..preprocessing import Preprocessing
from .loop import MAX_STEPS, Step, check_steps, evaluate
from .objectives import Objective


def lbfgs_optimize(
    model: nn.Module,
    objective: Objective,
    init: Tensor,
    steps: int,
    preprocessing: Preprocessing,
    lr: float = 1.0,
    history_size: int = 20,
    every: int = 1,
    max_steps: int = MAX_STEPS,
) -> Iterator[Step]:
    """Maximise ``objective`` over the image with L-BFGS (strong Wolfe line search).

    One step is one L-BFGS iteration (``max_iter=1``): a new direction and a line search, usually
    one or two evaluations of the model. The pixels are clamped to [0, 1] after each step.

    Args:
        model: the (shared) module, in eval mode; it is not modified.
        objective: the score to maximise, (N,) per image.
        init: starting pixels (N, C, H, W) in [0, 1].
        steps: number of iterations, 1 to ``max_steps``.
        preprocessing: the model's ``Preprocessing``.
        lr: L-BFGS's initial step length (1 with the line search).
        history_size: how many past updates approximate the curvature.
        every: yield every ``every`` steps (and after the last).

    Yields:
        ``Step``s, as ``optimize``; ``losses["evaluations"]`` counts the model evaluations so far.

    Raises:
        OptimizationError: the score or its gradient became NaN or Inf.
    """
    steps = check_steps(steps, max_steps)
    if every < 1:
        raise ValueError("`every` must be at least 1.")
    if init.dim() != 4 or init.shape[1] != preprocessing.channels:
        raise ValueError(f"The start image must be (N, {preprocessing.channels}, H, W), not {tuple(init.shape)}.")
    for name in objective.layers:
        get_module(model, name)
    # our own leaf, not the model's, on the model's device
    param = init.detach().float().to(module_device(model)).clamp(0, 1).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([param], lr=lr, max_iter=1, history_size=history_size, line_search_fn="strong_wolfe")
    cache: dict[str, object] = {}  # the last evaluation: the next step starts where the line search ended
    count = 0
    k = 1

    def closure() -> Tensor:
        nonlocal count
        with torch.no_grad():
            if "pixels" in cache and torch.equal(cache["pixels"], param):
                param.grad = cache["grad"].clone()
                return cache["loss"]
            grad, losses = evaluate(model, objective, param, preprocessing, k)
            count += 1
            param.grad = -grad  # L-BFGS minimises: the loss is the negative score
            # a CPU scalar: L-BFGS reads it with float() (no device round trip)
            loss = torch.tensor(-losses["objective"] * len(param), dtype=param.dtype, device="cpu")
            cache.update(pixels=param.detach().clone(), grad=param.grad.clone(), loss=loss, losses=losses)
            return loss

    history: list[dict[str, float]] = []
    for k in range(1, steps + 1):
        optimizer.step(closure)
        with torch.no_grad():
            param.clamp_(0, 1)
        closure()  # the values at the clamped point (cached when the clamp changed nothing)
        losses = {**cache["losses"], "evaluations": float(count)}  # type: ignore[dict-item]
        history.append(losses)
        if k % every == 0 or k == steps:
            yield Step(k, steps, param.detach().clone(), losses, tuple(history))
