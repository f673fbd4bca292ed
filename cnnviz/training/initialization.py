"""Weight initialisation in a deep MLP: activation and gradient statistics per layer.

Reproduces the lecture's figures (CS231n lecture 7; Glorot & Bengio, 2010; He et al., 2015): with
weights N(0, σ²) and σ small the activations shrink towards zero layer by layer, with σ large tanh
saturates at ±1; Xavier (σ = 1/√fan_in) keeps tanh's activations alive and Kaiming (σ = √2/√fan_in)
does the same for ReLU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

INIT_SCHEMES = ("normal", "xavier", "kaiming")
MLP_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass
class LayerStats:
    """One hidden layer of the MLP."""

    layer: int
    mean: float
    std: float
    saturated: float  # fraction of |activation| > 0.99 (tanh) or == 0 (relu)
    sample: np.ndarray  # up to 20,000 activation values, for histograms
    weight_grad_std: float  # std of dL/dW of this layer
    activation_grad_std: float  # std of dL/d(this layer's output)


def weight_std(scheme: str, fan_in: int, sigma: float = 0.01) -> float:
    """The σ of the weights: ``sigma`` for "normal", 1/√fan_in (Xavier), √2/√fan_in (Kaiming)."""
    if scheme == "normal":
        return sigma
    if scheme == "xavier":
        return 1.0 / math.sqrt(fan_in)
    if scheme == "kaiming":
        return math.sqrt(2.0 / fan_in)
    raise ValueError(f"Unknown initialisation {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}.")


def mlp_statistics(depth: int = 6, width: int = 1024, activation: str = "tanh", scheme: str = "normal",
                   sigma: float = 0.01, batch: int = 256, seed: int = 0, sample: int = 20_000) -> list[LayerStats]:
    """Push standard-normal inputs (batch, width) through ``depth`` layers x ← act(x W), W ~ N(0, σ²)
    (no biases), then backpropagate a standard-normal gradient from the last layer.

    Returns:
        Per hidden layer (1 … depth): activation mean, std, saturated fraction, a sample of values,
        and the std of the gradients on its weights and on its output.
    """
    if activation not in MLP_ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; choose tanh or relu.")
    if not 1 <= depth <= 50 or not 2 <= width <= 8192:
        raise ValueError("Depth must be 1 to 50 layers and width 2 to 8192 units.")
    generator = torch.Generator().manual_seed(seed)
    act = MLP_ACTIVATIONS[activation]
    x = torch.randn(batch, width, generator=generator)
    std = weight_std(scheme, width, sigma)
    weights = [(torch.randn(width, width, generator=generator) * std).requires_grad_(True) for _ in range(depth)]
    outputs = []
    h = x
    for w in weights:
        h = act(h @ w)
        h.retain_grad()
        outputs.append(h)
    upstream = torch.randn(batch, width, generator=generator)
    (h * upstream).sum().backward()
    stats = []
    picks = torch.randperm(batch * width, generator=generator)[:sample]
    for i, (w, out) in enumerate(zip(weights, outputs), start=1):
        values = out.detach()
        sat = (values.abs() > 0.99) if activation == "tanh" else (values == 0)
        stats.append(LayerStats(i, float(values.mean()), float(values.std()), float(sat.float().mean()),
                                values.reshape(-1)[picks].numpy(), float(w.grad.std()), float(out.grad.std())))
    return stats
