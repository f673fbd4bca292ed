"""Model-parameter randomisation sanity check (Adebayo et al., 2018), cascading from the top."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..display import rank_correlation
from .dispatch import attribute
from .gradcam import default_cam_layer
from .targets import Progress, Target, private_copy

@dataclass
class SanityStage:
    """One stage of cascading randomisation.

    Attributes:
        label: "original" or "randomised down to <layer>".
        layers: the layers re-initialised so far (top first).
        heat: the map (N, H, W) computed with those layers randomised.
        correlation: Spearman rank correlation of ``heat`` with the original map (first image).
    """

    label: str
    layers: list[str]
    heat: Tensor
    correlation: float
    note: str = field(default="")


def _weighted_layers(model: nn.Module) -> list[str]:
    """Conv and linear layers, in definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


@torch.no_grad()
def _randomize(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise a conv/linear layer's weights (He normal) and bias (uniform ±1/sqrt(fan_in))."""
    weight = module.weight
    fan_in = weight[0].numel()
    weight.copy_(torch.randn(weight.shape, generator=generator, dtype=weight.dtype, device="cpu") * math.sqrt(2.0 / fan_in))
    if getattr(module, "bias", None) is not None:
        bound = 1.0 / math.sqrt(fan_in)
        module.bias.copy_((torch.rand(module.bias.shape, generator=generator, dtype=weight.dtype, device="cpu") * 2 - 1) * bound)


def randomization_sanity_check(
    model: nn.Module,
    x: Tensor,
    target: Target,
    method: str,
    params: dict | None = None,
    stages: int = 4,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[SanityStage]:
    """Model-parameter randomisation test (Adebayo et al., 2018), cascading from the top.

    A private deep copy of the model (the shared one is never touched) has its conv and linear
    layers re-initialised with seeded random weights, from the output layer down; after each
    stage the map is recomputed and compared with the original one by Spearman rank correlation.
    A method that explains the model must change its map once the weights are random.

    Args:
        method: one of ``METHODS``; ``params`` as for ``attribute``.
        stages: number of randomisation stages (the last one randomises every layer).
        seed: seeds the new weights.

    Returns:
        [original, stage 1, ..., stage ``stages``], each with its map and correlation.
    """
    params = dict(params or {})
    clone = private_copy(model)
    if method == "Grad-CAM" and not params.get("layer"):
        params["layer"] = default_cam_layer(clone, x)
    layers = list(reversed(_weighted_layers(clone)))
    if not layers:
        raise ValueError("This model has no convolutional or linear layer to randomise.")
    stages = max(1, min(stages, len(layers)))
    cuts = sorted({max(1, round(len(layers) * (s + 1) / stages)) for s in range(stages)})
    if len(layers) > stages and cuts[0] > 1:
        cuts = [1, *cuts[1:]] if len(cuts) > 1 else [1]  # the first stage randomises the output layer alone
    modules = dict(clone.named_modules())
    generator = torch.Generator().manual_seed(seed)
    original = attribute(method, clone, x, target, params).heat
    results = [SanityStage("original", [], original, 1.0)]
    done = 0
    for step, cut in enumerate(cuts):
        for name in layers[done:cut]:
            _randomize(modules[name], generator)
        done = cut
        heat = attribute(method, clone, x, target, params).heat
        results.append(
            SanityStage(f"randomised down to {layers[cut - 1]}", layers[:cut], heat, rank_correlation(original[0], heat[0]))
        )
        if progress is not None:
            progress((step + 1) / len(cuts))
    return results
