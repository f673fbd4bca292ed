"""Which pixels matter: gradient saliency, guided backprop, Grad-CAM, occlusion, SmoothGrad,
integrated gradients, and the Adebayo et al. (2018) randomisation sanity check.

Every method works on a shared model without leaving anything on it:

* gradients are taken with ``torch.autograd.grad`` with respect to the input (or one recorded
  activation) only, so no weight gradient is ever computed and no ``.grad`` lands on a parameter;
* guided backprop changes no module: a thread-local ``TorchFunctionMode`` wraps the output of every
  ReLU call made in this thread during the forward pass (``nn.ReLU`` modules, in-place ReLUs,
  a ReLU module applied several times, and functional ``F.relu`` / ``torch.relu`` / ``Tensor.relu``
  calls, as in torchvision's GoogLeNet and DenseNet) in an autograd function whose backward lets
  only positive gradients through;
* activations are recorded through ``cnnviz.hooks.record_activations`` (hooks removed in
  ``finally``, firing only in the calling thread).

``target`` is a class index or a tensor of N class indices; ``x`` a preprocessed batch (N, C, H, W).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .display import channel_max_abs, rank_correlation
from .folding import bf16_inference_copy, bf16_supported, private_copy  # noqa: F401 (part of this module's API)
from .hooks import get_module, input_gradient, record_activations

Target = int | Tensor
Progress = Callable[[float], None]

METHODS = (
    "vanilla gradient",
    "guided backprop",
    "Grad-CAM",
    "occlusion",
    "SmoothGrad",
    "integrated gradients",
)
"""Method names understood by ``attribute`` and ``randomization_sanity_check``."""


# --------------------------------------------------------------------------------------------
# Targets and scores


def target_indices(target: Target, n: int, num_classes: int | None = None) -> Tensor:
    """A class index or N indices -> a long tensor (N,), checked against the number of classes.

    Raises:
        ValueError: wrong count, or an index outside the model's classes.
    """
    t = torch.as_tensor(target, dtype=torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"Got {t.numel()} target classes for a batch of {n} images; give one class or one per image.")
    if num_classes is not None and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"The target class must be between 0 and {num_classes - 1}.")
    return t.contiguous()


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"Expected a preprocessed batch (N, C, H, W); got {shape}.")


def top_class(model: nn.Module, x: Tensor) -> int:
    """Index of the highest logit for the first image of ``x``: the default target."""
    with torch.inference_mode():
        return int(model(x[:1]).argmax(dim=1)[0])


def logit_objective(target: Target) -> Callable[[Tensor], Tensor]:
    """Objective for ``cnnviz.hooks.input_gradient``: the target class logit of each image, (N,)."""

    def objective(output: Tensor) -> Tensor:
        t = target_indices(target, output.shape[0], output.shape[1]).to(output.device)
        return output.gather(1, t[:, None])[:, 0]

    return objective


# --------------------------------------------------------------------------------------------
# Vanilla gradient (Simonyan et al. 2014)


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


# --------------------------------------------------------------------------------------------
# Guided backprop (Springenberg et al. 2015)


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
    from .hooks import forward_hooks

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
    rows_cols = torch.as_tensor(position, dtype=torch.long)
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
    positions = torch.as_tensor(positions, dtype=torch.long)
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


# --------------------------------------------------------------------------------------------
# Grad-CAM (Selvaraju et al. 2017)


def module_check(model: nn.Module, layer: str) -> nn.Module:
    """``get_module`` with a ValueError (shown as a message in the UI) for an unknown name."""
    try:
        return get_module(model, layer)
    except KeyError as error:
        raise ValueError(str(error).strip("'\"")) from None


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
    inputs = x.detach().requires_grad_(True)  # so the activation is in the graph even for frozen weights
    with torch.enable_grad():
        with record_activations(model, [layer], keep_graph=True) as acts:
            output = model(inputs)
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
    from .hooks import forward_hooks

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


# --------------------------------------------------------------------------------------------
# Occlusion (Zeiler & Fergus 2014)


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"The occlusion {what} must be a positive number of pixels (or a pair of them).")
    return pair  # type: ignore[return-value]


def occlusion_positions(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of the sliding window, row by row (as Captum's Occlusion places them)."""
    (h, w), (wh, ww), (sh, sw) = size, window, stride
    return [(i, j) for i in range(0, h - wh + 1, sh) for j in range(0, w - ww + 1, sw)]


def occlusion(
    model: nn.Module,
    x: Tensor,
    target: Target,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    baseline: float | Tensor = 0.0,
    score: Literal["logit", "prob"] = "logit",
    precision: Literal["auto", "float32", "bfloat16"] = "auto",
    batch_size: int = 16,
    progress: Progress | None = None,
) -> Tensor:
    """Occlusion sensitivity (Zeiler & Fergus, 2014).

    For each window position, score(x) - score(x with the window set to ``baseline``) (all
    channels), averaged over the windows that cover each pixel. Windows are placed as Captum's
    ``Occlusion`` places them (top-left corners 0, stride, 2*stride, ... while the window fits);
    pixels no window covers get 0.

    Speed: the occluded copies run in batches of ``batch_size`` under ``torch.inference_mode``
    in channels-last layout; with ``precision="auto"`` on a CPU with native bfloat16, on
    ``bf16_inference_copy(model)`` (batch norms folded, bfloat16 weights; its map correlates > 0.99
    with the float32 one, see bench/). The unoccluded score is computed by the same network so
    that rounding largely cancels.

    Args:
        window: window side in pixels, or (height, width).
        stride: step between windows, or (height, width).
        baseline: value the occluded pixels get (in the normalised input space), a number or a
            tensor broadcastable to (C, H, W).
        score: "logit" (target class logit) or "prob" (its softmax probability).
        precision: "float32" for the exact map; "bfloat16" or "auto" (bfloat16 where native).
        batch_size: occluded images per forward pass.
        progress: called with the fraction done (0..1) after each batch.

    Returns:
        (N, H, W) float32 map, on the input's device.
    """
    _check_input(x)
    n, c, h, w = x.shape
    window, stride = _pair(window, "window"), _pair(stride, "stride")
    if window[0] > h or window[1] > w:
        raise ValueError(f"The occlusion window {window[0]}×{window[1]} is larger than the image ({h}×{w}).")
    if score not in ("logit", "prob"):
        raise ValueError('score must be "logit" or "prob".')
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    use_bf16 = precision == "bfloat16" or (precision == "auto" and x.device.type == "cpu" and bf16_supported())
    positions = occlusion_positions((h, w), window, stride)
    fill = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    fill = fill.expand(c, h, w) if fill.dim() <= 3 else fill
    targets = target_indices(target, n)

    network, dtype = (bf16_inference_copy(model, example=x[:1]), torch.bfloat16) if use_bf16 else (model, x.dtype)

    def scores(batch: Tensor, t: int) -> Tensor:
        output = network(batch.to(dtype)).float()
        if score == "prob":
            output = output.softmax(dim=1)
        return output[:, t]

    deltas = torch.empty(n, len(positions), device=x.device)
    total, done = n * len(positions), 0
    with torch.inference_mode():
        for k in range(n):
            image = x[k : k + 1].contiguous(memory_format=torch.channels_last)
            background = fill[k] if fill.dim() == 4 else fill
            t = int(targets[k])
            reference = scores(image, t)[0]
            for start in range(0, len(positions), batch_size):
                chunk = positions[start : start + batch_size]
                batch = image.expand(len(chunk), -1, -1, -1).clone(memory_format=torch.channels_last)
                for m, (i, j) in enumerate(chunk):
                    batch[m, :, i : i + window[0], j : j + window[1]] = background[:, i : i + window[0], j : j + window[1]]
                deltas[k, start : start + len(chunk)] = reference - scores(batch, t)
                done += len(chunk)
                if progress is not None:
                    progress(done / total)
    sums = torch.zeros(n, h, w, device=x.device)
    counts = torch.zeros(h, w, device=x.device)
    for p, (i, j) in enumerate(positions):
        sums[:, i : i + window[0], j : j + window[1]] += deltas[:, p, None, None]
        counts[i : i + window[0], j : j + window[1]] += 1
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))


# --------------------------------------------------------------------------------------------
# SmoothGrad (Smilkov et al. 2017) and integrated gradients (Sundararajan et al. 2017)


def smoothgrad(
    model: nn.Module,
    x: Tensor,
    target: Target,
    samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Tensor:
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input.

    Args:
        samples: number of noisy copies per image.
        noise: noise standard deviation as a fraction of each image's value range (max - min),
            as in the paper (10-20% works well).
        seed: seeds the noise (a private ``torch.Generator``; the global RNG is untouched).
        batch_size: noisy copies per forward/backward pass.

    Returns:
        (N, C, H, W) mean gradient.
    """
    _check_input(x)
    if samples < 1:
        raise ValueError("SmoothGrad needs at least one sample.")
    if noise < 0:
        raise ValueError("The SmoothGrad noise level cannot be negative.")
    n = x.shape[0]
    targets = target_indices(target, n)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    span = (x.flatten(1).amax(dim=1) - x.flatten(1).amin(dim=1)).view(1, n, 1, 1, 1)
    total = torch.zeros_like(x)
    done = 0
    while done < samples:
        m = min(batch_size, samples - done)
        eps = torch.randn((m, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
        noisy = (x.unsqueeze(0) + noise * span * eps).reshape(m * n, *x.shape[1:])
        _, grad = input_gradient(model, noisy, logit_objective(targets.repeat(m)))
        total += grad.view(m, *x.shape).sum(dim=0)
        done += m
        if progress is not None:
            progress(done / samples)
    return total / samples


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Target,
    baseline: Tensor | float | None = None,
    steps: int = 50,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> Tensor:
    """Integrated gradients (Sundararajan et al., 2017), trapezoid rule on ``steps`` intervals.

    (x - baseline) times the average gradient along the straight path from the baseline to x, so
    the attributions sum (approximately, up to the quadrature error) to
    score(x) - score(baseline) (completeness; check with ``completeness_gap``).

    Args:
        baseline: a black (all-zeros) input by default; a number or a tensor broadcastable to x.
        steps: number of intervals (steps + 1 gradient evaluations).
        batch_size: path points per forward/backward pass.

    Returns:
        (N, C, H, W) attributions.
    """
    _check_input(x)
    if steps < 1:
        raise ValueError("Integrated gradients needs at least one step.")
    n = x.shape[0]
    targets = target_indices(target, n)
    base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    alphas = torch.linspace(0, 1, steps + 1, dtype=x.dtype, device=x.device)
    weights = torch.ones(steps + 1, dtype=x.dtype, device=x.device)
    weights[0] = weights[-1] = 0.5
    total = torch.zeros_like(x)
    for start in range(0, steps + 1, batch_size):
        a = alphas[start : start + batch_size]
        m = a.numel()
        path = (base.unsqueeze(0) + a.view(m, 1, 1, 1, 1) * (x - base).unsqueeze(0)).reshape(m * n, *x.shape[1:])
        _, grad = input_gradient(model, path, logit_objective(targets.repeat(m)))
        total += (grad.view(m, *x.shape) * weights[start : start + m].view(m, 1, 1, 1, 1)).sum(dim=0)
        if progress is not None:
            progress(min(start + m, steps + 1) / (steps + 1))
    return (x - base) * total / steps


def completeness_gap(
    model: nn.Module, x: Tensor, target: Target, attributions: Tensor, baseline: Tensor | float | None = None
) -> tuple[Tensor, Tensor]:
    """Sum of attributions per image vs score(x) - score(baseline).

    Returns:
        (sums (N,), score differences (N,)): equal for exact integrated gradients.
    """
    base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    objective = logit_objective(target)
    with torch.inference_mode():
        difference = objective(model(x)) - objective(model(base))
    return attributions.flatten(1).sum(dim=1), difference


# --------------------------------------------------------------------------------------------
# One entry point for the page and the sanity check


@dataclass
class Attribution:
    """One method's result for the page.

    Attributes:
        method: one of ``METHODS``.
        raw: what the method returns, (N, C, H, W) or (N, H, W).
        heat: the map shown, (N, H, W): |.| then max over channels for per-channel methods,
            the map itself for Grad-CAM and occlusion (occlusion keeps its sign).
        seconds: wall time of the computation.
        note: anything the viewer should know (e.g. which ReLUs were guided).
    """

    method: str
    raw: Tensor
    heat: Tensor
    seconds: float
    note: str = ""


def to_heat(raw: Tensor) -> Tensor:
    """Attribution -> map shown: (N, C, H, W) -> |.| max over channels (Simonyan); (N, H, W) as is."""
    return channel_max_abs(raw) if raw.dim() == 4 else raw


def attribute(
    method: str,
    model: nn.Module,
    x: Tensor,
    target: Target,
    params: dict | None = None,
    progress: Progress | None = None,
) -> Attribution:
    """Run one method by name (see ``METHODS``) with its parameters, and time it.

    Params used: "layer" (Grad-CAM), "window", "stride", "baseline", "score", "precision"
    (occlusion), "samples", "noise", "seed" (SmoothGrad), "steps" (integrated gradients).
    """
    params = dict(params or {})
    start = time.perf_counter()
    note = ""
    if method == "vanilla gradient":
        raw = vanilla_gradient(model, x, target)
    elif method == "guided backprop":
        raw = guided_backprop(model, x, target)
    elif method == "Grad-CAM":
        layer = params.get("layer") or default_cam_layer(model, x)
        raw = grad_cam(model, x, target, layer)
        note = f"layer {layer}"
    elif method == "occlusion":
        raw = occlusion(
            model, x, target, params.get("window", 16), params.get("stride", 8), params.get("baseline", 0.0),
            params.get("score", "logit"), params.get("precision", "auto"), progress=progress,
        )
    elif method == "SmoothGrad":
        raw = smoothgrad(model, x, target, params.get("samples", 25), params.get("noise", 0.15), params.get("seed", 0),
                         progress=progress)
    elif method == "integrated gradients":
        raw = integrated_gradients(model, x, target, params.get("baseline"), params.get("steps", 50), progress=progress)
        sums, difference = completeness_gap(model, x, target, raw, params.get("baseline"))
        note = f"sum of attributions {float(sums[0]):.3f} vs score(x) − score(black) {float(difference[0]):.3f}"
    else:
        raise ValueError(f"Unknown method {method!r}. Choose from: {', '.join(METHODS)}.")
    return Attribution(method, raw.detach(), to_heat(raw.detach()), time.perf_counter() - start, note)


# --------------------------------------------------------------------------------------------
# Sanity check (Adebayo et al. 2018)


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
    weight.copy_(torch.randn(weight.shape, generator=generator, dtype=weight.dtype) * math.sqrt(2.0 / fan_in))
    if getattr(module, "bias", None) is not None:
        bound = 1.0 / math.sqrt(fan_in)
        module.bias.copy_((torch.rand(module.bias.shape, generator=generator, dtype=weight.dtype) * 2 - 1) * bound)


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
