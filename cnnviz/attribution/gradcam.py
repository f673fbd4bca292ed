"""Grad-CAM (Selvaraju et al., 2017) and its default layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import forward_hooks, graph_from
from .targets import Target, _check_input, logit_objective, module_check

def grad_cam(model: nn.Module, x: Tensor, target: Target, layer: str) -> Tensor:
    """Grad-CAM (Selvaraju et al., 2017): ReLU(sum_k alpha_k A^k), alpha_k the spatially averaged
    gradient of the target logit with respect to channel k of layer ``layer``'s output A,
    bilinearly upsampled (align_corners=False) to the input size.

    Args:
        layer: module name from the layer table, with a spatial output (N, K, h, w).

    Returns:
        (N, H, W) non-negative map.
    """
    _check_input(x)
    module_check(model, layer)
    with graph_from(model, layer) as acts:  # autograd records only the layers after ``layer``
        output = model(x.detach())
        if layer not in acts:
            raise ValueError(f"Layer {layer!r} was not used in the forward pass.")
        activation = acts[layer]
        if activation.dim() != 4:
            raise ValueError(
                f"Grad-CAM needs a layer with a spatial output (N, C, h, w); {layer!r} gives "
                f"{tuple(activation.shape)}. Pick a convolutional layer."
            )
        score = logit_objective(target)(output)
        (grad,) = torch.autograd.grad(score.sum(), activation)
    return cam_from_gradient(activation.detach(), grad, tuple(x.shape[-2:]))


def cam_from_gradient(activation: Tensor, gradient: Tensor, size: tuple[int, int]) -> Tensor:
    """Grad-CAM's map from a layer's output A (N, K, h, w) and the gradient of the score with respect
    to it: ReLU(sum_k alpha_k A^k), alpha_k = the gradient of channel k averaged over positions,
    bilinearly upsampled (align_corners=False) to ``size`` (H, W). Returns (N, H, W)."""
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


def default_cam_layer(model: nn.Module, x: Tensor) -> str:
    """A sensible Grad-CAM layer: the last module to finish whose output is spatial (N, C, h, w),
    h, w > 1, and not a pooling layer's output; among modules returning that very tensor (a block
    and its last child), the outermost. ResNet -> "layer4", VGG -> its last ReLU of "features"."""
    pooling = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    finished: list[tuple[str, Tensor]] = []
    pooled: list[Tensor] = []
    modules = {n: m for n, m in model.named_modules() if n}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, Tensor):
                finished.append((name, output))
                if isinstance(module, pooling):
                    pooled.append(output)

        return hook

    with torch.inference_mode(), forward_hooks(model, {n: record(n) for n in modules}):
        model(x[:1])
    spatial = [
        (n, out) for n, out in finished
        if out.dim() == 4 and out.shape[2] > 1 and out.shape[3] > 1 and not any(out is p for p in pooled)
    ]
    if not spatial:
        raise ValueError("This model has no layer with a spatial output, so Grad-CAM does not apply.")
    last = spatial[-1][1]
    same = [n for n, out in spatial if out is last]
    return min(same, key=lambda n: (n.count("."), n))
