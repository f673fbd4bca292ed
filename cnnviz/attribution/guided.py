"""Guided backprop (Springenberg et al., 2015): of a class logit, of one channel, of one unit per image.

Guided backprop changes no module: a thread-local ``TorchFunctionMode`` wraps the output of every
ReLU call made in this thread during the forward pass (``nn.ReLU`` modules, in-place ReLUs, a ReLU
module applied several times, and functional ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` calls,
as in torchvision's GoogLeNet and DenseNet) in an autograd function whose backward lets only
positive gradients through.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..hooks import input_gradient, record_activations
from .targets import Progress, Target, _check_input, logit_objective, module_check

class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through.

    Placed right after a ReLU, the ReLU's own backward then also masks where its input was not
    positive, which together is the guided backprop rule.
    """

    @staticmethod
    def forward(ctx, y: Tensor) -> Tensor:  # noqa: D102
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return grad.clamp(min=0)


_RELU_FUNCTIONS = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    Tensor.relu,
    Tensor.relu_,
}


class GuidedReLUMode(TorchFunctionMode):
    """Inside this mode (this thread only), every ReLU call's result carries the guided backward.

    ``relu_calls`` counts the ReLU calls seen, for telling apart module and functional ReLUs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.relu_calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        out = func(*args, **(kwargs or {}))
        if func in _RELU_FUNCTIONS and isinstance(out, Tensor):
            self.relu_calls += 1
            if out.requires_grad:
                return _PositiveGradient.apply(out)
        return out


class _GuidedForward:
    """Callable standing in for the model: runs it under ``GuidedReLUMode``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, x: Tensor) -> Tensor:
        with GuidedReLUMode():
            return self.model(x)


def guided_backprop(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """Guided backprop (Springenberg et al., 2015) of the target class logit.

    Only positive gradients flow back through each ReLU, and only where its input was positive.
    Covers ``nn.ReLU`` modules (in place or not, applied once or several times) and functional
    ReLUs (``F.relu`` in ``forward``, as in torchvision's GoogLeNet and DenseNet) alike. Captum's
    ``GuidedBackprop`` guides only ``nn.ReLU`` modules, so on models with functional ReLUs the two
    differ by design (``count_relus`` tells whether a model has any).

    Returns:
        (N, C, H, W) guided gradient.
    """
    _check_input(x)
    _, grad = input_gradient(_GuidedForward(model), x, logit_objective(target))
    return grad


def count_relus(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """Count ReLU calls in one forward pass: (all ReLU calls, calls made by ``nn.ReLU`` modules).

    Their difference is the number of functional ReLU calls (``F.relu`` inside ``forward``), which
    Captum's GuidedBackprop would leave unguided and ``guided_backprop`` guides.
    """
    from ..hooks import forward_hooks

    module_calls = [0]

    def count(module: nn.Module, inputs: tuple, output: object) -> None:
        module_calls[0] += 1

    names = [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    mode = GuidedReLUMode()
    with torch.inference_mode(), forward_hooks(model, {n: count for n in names}), mode:
        model(x[:1])
    return mode.relu_calls, module_calls[0]


def _unit_positions(position: tuple[int, int] | Sequence[int] | Tensor, n: int, map_size: tuple[int, int]) -> Tensor:
    """(row, col) for all images, or one (row, col) per image -> a long tensor (N, 2), checked."""
    rows_cols = torch.as_tensor(position, dtype=torch.long, device="cpu")  # checked here, moved by the caller
    rows_cols = rows_cols[None] if rows_cols.shape == (2,) else rows_cols
    if rows_cols.dim() != 2 or rows_cols.shape[1] != 2 or rows_cols.shape[0] not in (1, n):
        raise ValueError(f"Give one (row, col) position, or one per image ({n} images: shape ({n}, 2)).")
    rows_cols = rows_cols.expand(n, 2)
    h, w = map_size
    if int(rows_cols[:, 0].min()) < 0 or int(rows_cols[:, 0].max()) >= h or int(rows_cols[:, 1].min()) < 0 \
            or int(rows_cols[:, 1].max()) >= w:
        raise ValueError(f"The position must lie in the layer's {h}×{w} feature map: row 0 to {h - 1}, column 0 to {w - 1}.")
    return rows_cols


def guided_backprop_channel(
    model: nn.Module,
    x: Tensor,
    layer: str,
    channel: int,
    reduce: Literal["max", "sum"] = "max",
    position: tuple[int, int] | Tensor | None = None,
) -> Tensor:
    """Guided backprop of one channel of an intermediate layer ("intermediate features via guided
    backprop", Springenberg et al. 2015): which input pixels make this feature fire.

    Args:
        model: a classifier in eval mode (not modified).
        x: preprocessed batch (N, C, H, W).
        layer: module name from the layer table; its output must be (N, K, h, w) or (N, K).
        channel: channel index in that output.
        reduce: "max" follows the strongest position of the channel, "sum" the whole map
            (ignored when ``position`` is given).
        position: one unit instead: (row, col) in the layer's (h, w) feature map for every image,
            or a (N, 2) tensor of one (row, col) per image (e.g. each image's strongest unit, as
            for maximally activating patches). Needs a spatial layer.

    Returns:
        (N, C, H, W) guided gradient of the channel's (max, summed or one unit's) activation.
        For one unit it is zero outside the unit's receptive field.

    Raises:
        ValueError: unknown layer, channel out of range, position outside the feature map.
    """
    _check_input(x)
    module_check(model, layer)
    inputs = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with record_activations(model, [layer], keep_graph=True) as acts, GuidedReLUMode():
            model(inputs)
        if layer not in acts:
            raise ValueError(f"Layer {layer!r} was not used in the forward pass.")
        activation = acts[layer]
        if activation.dim() < 2:
            raise ValueError(f"Layer {layer!r} has no channels (output shape {tuple(activation.shape)}).")
        if not 0 <= channel < activation.shape[1]:
            raise ValueError(f"Layer {layer!r} has {activation.shape[1]} channels; pick 0 to {activation.shape[1] - 1}.")
        if position is not None:
            if activation.dim() != 4:
                raise ValueError(f"Layer {layer!r} has no feature map (output shape {tuple(activation.shape)}); "
                                 "a unit position needs a convolutional layer.")
            rows_cols = _unit_positions(position, x.shape[0], tuple(activation.shape[2:])).to(activation.device)
            images = torch.arange(x.shape[0], device=activation.device)
            score = activation[images, channel, rows_cols[:, 0], rows_cols[:, 1]]
        else:
            values = activation[:, channel].flatten(1)
            score = values.amax(dim=1) if reduce == "max" else values.sum(dim=1)
        (grad,) = torch.autograd.grad(score.sum(), inputs)
    return grad


def guided_backprop_units(
    model: nn.Module,
    x: Tensor,
    layer: str,
    channel: int,
    positions: Tensor,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Tensor:
    """Guided backprop of one unit per image (channel ``channel`` at ``positions[i]`` for image i),
    in batches of ``batch_size`` images so big models stay within memory: the maps beside the
    maximally activating patches (Springenberg et al., 2015, as in Zeiler & Fergus, 2014).

    Args:
        x: preprocessed batch (N, C, H, W), e.g. the top-k images of a channel.
        positions: (N, 2) (row, col) per image in the layer's feature map.
        batch_size: images per guided forward/backward pass.
        progress: called with the fraction done (0..1) after each batch.

    Returns:
        (N, C, H, W) guided gradients, each zero outside its unit's receptive field.
    """
    _check_input(x)
    positions = torch.as_tensor(positions, dtype=torch.long, device="cpu")
    if positions.shape != (x.shape[0], 2):
        raise ValueError(f"Give one (row, col) per image: positions of shape ({x.shape[0]}, 2), not {tuple(positions.shape)}.")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    parts = []
    for start in range(0, x.shape[0], batch_size):
        stop = min(start + batch_size, x.shape[0])
        parts.append(guided_backprop_channel(model, x[start:stop], layer, channel, position=positions[start:stop]))
        if progress:
            progress(stop / x.shape[0])
    return torch.cat(parts)
