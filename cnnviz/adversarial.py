"""Adversarial examples on the one optimisation loop of ``cnnviz.synthesis``.

FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), untargeted or targeted, with ε in pixel
levels (k/255) in [0, 1] pixel space: the perturbation never moves a pixel by more than k levels,
and the adversarial image stays a valid image. PGD is the loop with a sign-gradient step rule and a
projection onto the ε-ball as regularizer; FGSM is one step of it with step size ε.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from .models import LoadedModel, predict
from .synthesis import Step, class_index, check_steps, cross_entropy, optimize, project_linf, sign_ascent

METHODS = ("FGSM", "PGD")
MAX_EPSILON_LEVELS = 64
"""Largest ε, in pixel levels out of 255."""


@dataclass(frozen=True)
class AttackResult:
    """Outcome of an attack on a batch.

    Attributes:
        original: pixels (N, C, H, W) in [0, 1].
        adversarial: pixels (N, C, H, W) in [0, 1], on the 8-bit grid (what a PNG keeps).
        perturbation: adversarial − original, each entry within ±ε.
        epsilon: ε in [0, 1] pixel units (levels / 255).
        before, after: top-5 (class, probability) per image, of the original and the adversarial image.
        labels: the class each attack moved away from (untargeted) or toward (targeted), (N,).
        targeted: whether ``labels`` are targets.
        success: per image, whether the prediction left the label (untargeted) or reached it (targeted).
        steps: the loop's last ``Step`` (its history is the loss curve).
    """

    original: Tensor
    adversarial: Tensor
    perturbation: Tensor
    epsilon: float
    before: list[list[tuple[str, float]]]
    after: list[list[tuple[str, float]]]
    labels: Tensor
    targeted: bool
    success: list[bool]
    steps: Step

    def amplified_perturbation(self) -> tuple[Tensor, float]:
        """The perturbation made visible: 0.5 + scale·δ with scale = 0.5/ε, so ±ε spans [0, 1].

        Returns:
            (pixels (N, C, H, W) in [0, 1], scale factor).
        """
        scale = 0.5 / self.epsilon
        return (0.5 + scale * self.perturbation).clamp(0, 1), scale


def _check(method: str, epsilon_levels: float, steps: int, step_levels: float | None) -> tuple[str, int, float]:
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"The attack must be one of {', '.join(METHODS)}, not {method!r}.")
    if not 0 < epsilon_levels <= MAX_EPSILON_LEVELS:
        raise ValueError(f"ε must be between 1 and {MAX_EPSILON_LEVELS} pixel levels (of 255), not {epsilon_levels}.")
    if method == "FGSM":
        return method, 1, epsilon_levels / 255
    steps = check_steps(steps)
    step_levels = step_levels if step_levels is not None else max(epsilon_levels / 4, 0.25)
    if not 0 < step_levels <= epsilon_levels:
        raise ValueError("The PGD step size must be positive and at most ε.")
    return method, steps, step_levels / 255


def attack_steps(
    model: LoadedModel,
    x: Tensor,
    epsilon_levels: float = 8,
    method: str = "PGD",
    target: str | int | Tensor | None = None,
    labels: Tensor | None = None,
    steps: int = 20,
    step_levels: float | None = None,
    random_start: bool = False,
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """The attack as a stream of ``Step``s (the loop of ``cnnviz.synthesis.optimize``).

    Args:
        x: normalised model input (N, C, H, W).
        epsilon_levels: ε in pixel levels out of 255 (8 means 8/255).
        method: "FGSM" (one step of size ε) or "PGD" (``steps`` sign steps of ``step_levels``,
            projected onto the ε-ball).
        target: class name or index to reach (targeted), or None (untargeted).
        labels: for untargeted attacks, the classes to move away from (N,); default: the model's
            current predictions.
        random_start: PGD starts at a uniformly random point of the ε-ball (seeded).

    Yields:
        ``Step``s whose pixels are the adversarial images so far.
    """
    method, steps, alpha = _check(method, epsilon_levels, steps, step_levels)
    epsilon = epsilon_levels / 255
    pre = model.preprocessing
    x = x.to(model.device)
    original = pre.denormalize(x.detach().float()).clamp(0, 1)
    if target is not None:
        index = target if isinstance(target, Tensor) else torch.full((len(x),), class_index(model, target), device=x.device)
        objective = -cross_entropy(index)
    else:
        if labels is None:
            with torch.no_grad():
                labels = model.module(x).argmax(1)
        objective = cross_entropy(labels)
    start = original
    if random_start and method == "PGD":
        generator = torch.Generator().manual_seed(int(seed))
        noise = (torch.rand(original.shape, generator=generator, device="cpu").to(x.device) * 2 - 1) * epsilon
        start = (original + noise).clamp(0, 1)
    return optimize(
        model.module,
        objective,
        start,
        steps,
        sign_ascent(alpha),
        pre,
        regularizers=[project_linf(original, epsilon)],
        seed=seed,
        every=every,
    )


def finish_attack(
    model: LoadedModel,
    x: Tensor,
    last: Step,
    epsilon_levels: float,
    target: str | int | Tensor | None = None,
    labels: Tensor | None = None,
) -> AttackResult:
    """Quantise the last step's image to 8 bits (staying within ε) and compare predictions.

    Args:
        x: the normalised input the attack started from (N, C, H, W).
        last: the last ``Step`` of ``attack_steps``.
    """
    pre = model.preprocessing
    epsilon = epsilon_levels / 255
    original = pre.denormalize(x.detach().float()).clamp(0, 1)
    # round the perturbation to whole levels; |round(δ·255)| <= ε·255 when ε is a whole number of levels
    delta = torch.round((last.pixels - original) * 255) / 255
    delta = delta.clamp(-epsilon, epsilon)
    adversarial = torch.round((original + delta).clamp(0, 1) * 255) / 255
    before = predict(model, x)
    after = predict(model, pre.normalize(adversarial))
    with torch.inference_mode():
        predicted = model.module(pre.normalize(adversarial)).argmax(1)
        if target is not None:
            wanted = target if isinstance(target, Tensor) else torch.full((len(x),), class_index(model, target), device=predicted.device)
            success = (predicted == wanted).tolist()
        else:
            wanted = labels if labels is not None else model.module(x).argmax(1)
            success = (predicted != wanted).tolist()
    return AttackResult(
        original, adversarial, adversarial - original, epsilon, before, after, wanted, target is not None, success, last
    )


def attack(model: LoadedModel, x: Tensor, epsilon_levels: float = 8, **params) -> AttackResult:
    """Run ``attack_steps`` to the end and return an ``AttackResult`` (see ``attack_steps`` for args)."""
    last = None
    for last in attack_steps(model, x, epsilon_levels, **params):
        pass
    return finish_attack(model, x, last, epsilon_levels, params.get("target"), params.get("labels"))


def smallest_epsilon(
    model: LoadedModel,
    x: Tensor,
    method: str = "FGSM",
    max_levels: int = MAX_EPSILON_LEVELS,
    steps: int = 20,
    step_fraction: float = 0.25,
    random_start: bool = False,
    seed: int = 0,
) -> tuple[int | None, AttackResult]:
    """The smallest ε, in whole pixel levels, at which an untargeted attack changes the label (bisection).

    Bisection assumes that an attack which works at ε also works at any larger ε (true for PGD in
    practice, nearly so for FGSM). The label to move away from is the prediction for ``x``.

    Args:
        x: one normalised input (1, C, H, W).
        method: "FGSM" or "PGD".
        max_levels: the largest ε tried (at most ``MAX_EPSILON_LEVELS``).
        steps, step_fraction, random_start, seed: PGD's steps, its step size as a fraction of ε (at
            least a quarter level), random start and seed.

    Returns:
        (ε in levels, the attack at that ε), or (None, the attack at ``max_levels``) when even that
        does not change the label.
    """
    if x.dim() != 4 or len(x) != 1:
        raise ValueError(f"The bisection runs on one image (1, C, H, W), not {tuple(x.shape)}.")
    if not 1 <= max_levels <= MAX_EPSILON_LEVELS:
        raise ValueError(f"max_levels must be between 1 and {MAX_EPSILON_LEVELS}, not {max_levels}.")
    with torch.no_grad():
        labels = model.module(x).argmax(1)
    pgd = method.upper() == "PGD"

    def run(levels: int) -> AttackResult:
        return attack(
            model, x, levels, method=method, labels=labels, steps=steps,
            step_levels=max(levels * step_fraction, 0.25) if pgd else None, random_start=random_start, seed=seed,
        )

    high = run(max_levels)
    if not high.success[0]:
        return None, high
    low_levels, high_levels = 0, max_levels  # fails at low (0 changes nothing), works at high
    while high_levels - low_levels > 1:
        middle = (low_levels + high_levels) // 2
        result = run(middle)
        if result.success[0]:
            high_levels, high = middle, result
        else:
            low_levels = middle
    return high_levels, high
