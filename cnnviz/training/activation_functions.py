"""Activation functions, their derivatives and saturated regions, and why zero-centred outputs matter.

``curve(name, x, **params)`` gives f(x) and f'(x) (the derivative by autograd, so it is the
derivative PyTorch uses, including its choice at kinks). ``zigzag(...)`` simulates gradient descent
of a neuron whose inputs are all positive: every gradient on w then has one sign in all its
components, so the path to a weight vector with mixed signs zig-zags (CS231n, lecture 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ActivationInfo:
    """How one activation function is defined and what the lecture says about it."""

    formula: str  # LaTeX
    zero_centred: str
    note: str
    fn: Callable[..., Tensor]


def _maxout(x: Tensor, w1: float = 1.0, b1: float = 0.0, w2: float = -0.5, b2: float = 0.0) -> Tensor:
    return torch.maximum(w1 * x + b1, w2 * x + b2)


ACTIVATION_FUNCTIONS: dict[str, ActivationInfo] = {
    "sigmoid": ActivationInfo(r"\sigma(x) = \frac{1}{1 + e^{-x}}", "no (outputs in (0, 1))",
                              "Saturates at both ends (gradient ≈ 0), outputs are always positive, exp is costly.",
                              lambda x: torch.sigmoid(x)),
    "tanh": ActivationInfo(r"\tanh(x)", "yes (outputs in (-1, 1))",
                           "Zero-centred, but still saturates at both ends.", lambda x: torch.tanh(x)),
    "ReLU": ActivationInfo(r"\max(0, x)", "no (outputs ≥ 0)",
                           "No saturation for x > 0, cheap, converges fast (Krizhevsky et al., 2012); gradient 0 "
                           "for x < 0, so a unit that is never positive is dead.", lambda x: F.relu(x)),
    "Leaky ReLU": ActivationInfo(r"\max(\alpha x, x)", "almost (small negative outputs)",
                                 "Never dies: the gradient for x < 0 is α (Maas et al., 2013).",
                                 lambda x, alpha=0.01: F.leaky_relu(x, alpha)),
    "PReLU": ActivationInfo(r"\max(\alpha x, x),\ \alpha\ \text{learned}", "almost",
                            "Leaky ReLU whose slope α is learned (He et al., 2015).",
                            lambda x, alpha=0.25: torch.where(x > 0, x, alpha * x)),
    "ELU": ActivationInfo(r"x \text{ if } x > 0 \text{ else } \alpha (e^x - 1)", "closer to zero mean",
                          "Negative outputs saturate, which adds some robustness to noise (Clevert et al., 2016).",
                          lambda x, alpha=1.0: F.elu(x, alpha)),
    "SELU": ActivationInfo(r"\lambda\,(x \text{ if } x > 0 \text{ else } \alpha (e^x - 1))", "yes, self-normalising",
                           "Scaled ELU: with LeCun-normal weights, activations keep mean 0 and variance 1 in deep "
                           "MLPs without batch norm (Klambauer et al., 2017).", lambda x: F.selu(x)),
    "Maxout": ActivationInfo(r"\max(w_1 x + b_1,\ w_2 x + b_2)", "depends on the two lines",
                             "The maximum of two linear functions: generalises ReLU and Leaky ReLU, never saturates "
                             "or dies, but doubles the parameters (Goodfellow et al., 2013).", _maxout),
    "GELU": ActivationInfo(r"x\,\Phi(x)", "almost", "A smooth ReLU used by Transformers (Hendrycks & Gimpel, 2016).",
                           lambda x: F.gelu(x)),
    "SiLU": ActivationInfo(r"x\,\sigma(x)", "almost", "Swish / SiLU: smooth and non-monotonic near 0 "
                           "(Ramachandran et al., 2017).", lambda x: F.silu(x)),
}
"""The lecture's activation functions, by display name."""


def curve(name: str, x: np.ndarray | Tensor, **params) -> tuple[np.ndarray, np.ndarray]:
    """f(x) and f'(x) of activation ``name`` at the points ``x``.

    Args:
        params: the function's parameters (alpha for Leaky ReLU / PReLU / ELU; w1, b1, w2, b2 for Maxout).

    Returns:
        Two float64 arrays shaped like ``x``.
    """
    if name not in ACTIVATION_FUNCTIONS:
        raise KeyError(f"Unknown activation {name!r}; choose one of {', '.join(ACTIVATION_FUNCTIONS)}.")
    t = torch.as_tensor(np.asarray(x, dtype=np.float64)).clone().requires_grad_(True)
    y = ACTIVATION_FUNCTIONS[name].fn(t, **params)
    (g,) = torch.autograd.grad(y.sum(), t)
    return y.detach().numpy(), g.numpy()


def saturated_regions(x: np.ndarray, gradient: np.ndarray, threshold: float = 0.05) -> list[tuple[float, float]]:
    """Intervals of ``x`` (sorted) where |f'(x)| < ``threshold``: there the gradient nearly vanishes."""
    flat = np.abs(gradient) < threshold
    regions, start = [], None
    for i, low in enumerate(flat):
        if low and start is None:
            start = i
        if (not low or i == len(flat) - 1) and start is not None:
            end = i if low else i - 1
            regions.append((float(x[start]), float(x[end])))
            start = None
    return regions


@dataclass
class ZigZag:
    """Weight paths of one linear neuron trained towards ``target`` with positive vs zero-centred inputs."""

    target: tuple[float, float]
    positive_path: np.ndarray  # (steps + 1, 2)
    centred_path: np.ndarray
    positive_same_sign: float  # fraction of updates whose two components share one sign
    centred_same_sign: float


def zigzag(target: tuple[float, float] = (1.0, -1.0), steps: int = 30, lr: float = 0.5, seed: int = 0) -> ZigZag:
    """Gradient descent on L = ½ (w·x - w*·x)² for one input x per step, from w = 0.

    With all-positive inputs (x ~ U(0, 1)²) the update -η (w·x - w*·x) x points along x or -x, so
    both components always share a sign: to reach w* = (1, -1) the path must zig-zag. Zero-centred
    inputs (x ~ N(0, ⅓ I), about the same spread) allow any direction.
    """
    rng = np.random.default_rng(seed)
    w_star = np.asarray(target, dtype=np.float64)

    def descend(xs: np.ndarray) -> tuple[np.ndarray, float]:
        w, path, same = np.zeros(2), [np.zeros(2)], 0
        for x in xs:
            step = -lr * float((w - w_star) @ x) * x
            same += int(np.sign(step[0]) == np.sign(step[1]))
            w = w + step
            path.append(w.copy())
        return np.array(path), same / len(xs)

    positive, p_same = descend(rng.uniform(0.0, 1.0, (steps, 2)))
    centred, c_same = descend(rng.normal(0.0, math.sqrt(1 / 3), (steps, 2)))
    return ZigZag(tuple(target), positive, centred, p_same, c_same)
