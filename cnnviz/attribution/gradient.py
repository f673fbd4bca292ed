"""Vanilla gradient saliency (Simonyan et al., 2014)."""

from __future__ import annotations

from torch import Tensor, nn

from ..hooks import input_gradient
from .targets import Target, _check_input, logit_objective

def vanilla_gradient(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """Gradient of the target class logit with respect to the input (Simonyan et al., 2014).

    Args:
        model: a classifier in eval mode (not modified).
        x: preprocessed batch (N, C, H, W).
        target: class index or (N,) indices.

    Returns:
        (N, C, H, W) gradient.
    """
    _check_input(x)
    _, grad = input_gradient(model, x, logit_objective(target))
    return grad
