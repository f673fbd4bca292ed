"""Gram matrices: the texture statistics of a layer (Gatys et al. 2015), and the style loss built on them.

The Gram matrix of a layer's features F (C channels × M = H·W positions) is G = F Fᵀ / M: how strongly
each pair of channels fires together, averaged over positions. Where things are is summed away;
which features appear together stays, and that is texture.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from ..models import LoadedModel
from ..synthesis import Capture, Objective, target_features, term
from .vgg import module_name


def gram_matrix(features: Tensor) -> Tensor:
    """G = F Fᵀ / (H·W) with F the features reshaped to (N, C, H·W).

    Args:
        features: (N, C, H, W).

    Returns:
        (N, C, C), symmetric and positive semi-definite.
    """
    if features.dim() != 4:
        raise ValueError(f"A Gram matrix needs feature maps (N, C, H, W), not {tuple(features.shape)}.")
    n, c, h, w = features.shape
    if c > 1 and features.is_contiguous(memory_format=torch.channels_last):  # (N, H·W, C) is then a view
        f = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
        return torch.bmm(f.transpose(1, 2), f) / (h * w)
    f = features.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (h * w)


def relative_gram_error(gram: Tensor, target: Tensor) -> Tensor:
    """‖G − A‖² / ‖A‖² per image: how far a Gram matrix is from the style's, relative to its size.

    Args:
        gram: (N, C, C).
        target: (1, C, C) or (N, C, C).

    Returns:
        (N,).
    """
    norm = target.pow(2).sum((1, 2)).clamp_min(1e-12)
    return (gram - target).pow(2).sum((1, 2)) / norm


def style_grams(model: LoadedModel, pixels: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Gram matrices of the style image at ``layers`` (Gatys names such as "conv1_1", or module names).

    Args:
        pixels: the style image (1, 3, H, W) in [0, 1].

    Returns:
        layer -> (1, C, C), keyed by the names given.

    Raises:
        ValueError: no layer, or a layer whose features are all zero for this image (no texture to match).
    """
    if not layers:
        raise ValueError("Pick at least one style layer.")
    names = [module_name(layer) for layer in layers]
    features = target_features(model, model.preprocessing.normalize(pixels.float()), names)
    grams = {}
    for layer, name in zip(layers, names):
        gram = gram_matrix(features[name].float())
        if not bool(gram.abs().sum() > 0):
            raise ValueError(f"The features of layer {layer} are all zero for the style image: pick another layer or image.")
        grams[layer] = gram
    return grams


def style_loss(targets: Mapping[str, Tensor], weights: Mapping[str, float] | None = None, name: str = "style loss") -> Objective:
    """Σ_l w_l ‖G_l(x) − A_l‖² / ‖A_l‖²: the weighted relative Gram errors of the image's layers (a penalty).

    Gatys et al. divide each layer's squared Gram error by a constant of that layer (4 N_l² M_l²);
    dividing by ‖A_l‖² instead makes each layer count the same whatever the scale of its features,
    so the weights mean the same for trained and random networks.

    Args:
        targets: layer (Gatys or module name) -> the style's Gram matrix (1, C, C), e.g. from ``style_grams``.
        weights: layer -> weight (default: 1 / number of layers each, as Gatys et al.).

    Returns:
        An ``Objective`` with values (N,), reported as ``name``.
    """
    if not targets:
        raise ValueError("Pick at least one style layer.")
    layers = list(targets)
    weights = dict(weights) if weights is not None else {layer: 1.0 / len(layers) for layer in layers}
    unknown = [layer for layer in weights if layer not in targets]
    if unknown:
        raise ValueError(f"Weights given for layers without a style target: {', '.join(unknown)}.")
    if any(w < 0 for w in weights.values()):
        raise ValueError("Style layer weights must be >= 0.")
    active = [layer for layer in layers if weights.get(layer, 0.0) > 0]  # the forward stops after the deepest
    if not active:
        raise ValueError("Every style layer has weight 0: give at least one a positive weight.")
    modules = {layer: module_name(layer) for layer in active}
    grams = {layer: targets[layer].detach().float() for layer in active}

    @term(name, layers=list(modules.values()))
    def fn(c: Capture) -> Tensor:
        total = None
        for layer in active:
            error = relative_gram_error(gram_matrix(c.activations[modules[layer]].float()), grams[layer])
            total = error * weights[layer] if total is None else torch.add(total, error, alpha=weights[layer])
        return total

    return fn
